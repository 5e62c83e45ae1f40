"""Serving: the promoted model exported with its feature spec, and a loader for raw samples."""
