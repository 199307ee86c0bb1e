"""alignlab: alignment research you can run on real language models."""

__version__ = "0.1.0"
