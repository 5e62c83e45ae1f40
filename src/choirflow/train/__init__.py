"""Data loading, the training loop and checkpoints."""
