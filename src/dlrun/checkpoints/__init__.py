"""Checkpoint files: their format, safe loading, when they are written, and resuming from them."""
