"""memdistill: continual learning with distilled memory."""
__version__ = "0.1.0"
