"""attnkit: attention mechanisms made real."""

__version__ = "0.1.0"
