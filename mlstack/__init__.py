"""mlstack: a declarative compiler for end-to-end ML systems."""

__version__ = "0.1.0"
