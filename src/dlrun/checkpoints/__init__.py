"""Checkpoint files: their versioned format, safe loading, and what a checkpoint may make dlrun
import (trust.py, torch-free: the command line asks it before torch loads)."""
