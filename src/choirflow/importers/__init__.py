"""Importers that bring public data sets into the raw contract or straight into gold."""
