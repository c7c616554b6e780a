"""dlrun: deep-learning experiments from one command."""

__version__ = "0.1.0"
