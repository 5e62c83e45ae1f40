"""Raw logs into bronze Delta tables."""
