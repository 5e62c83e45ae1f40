"""Behaviours, sequences, temporal features and samples."""
