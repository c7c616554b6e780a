"""dlrun: deep-learning experiments from one command."""

__version__ = "0.2.0"
