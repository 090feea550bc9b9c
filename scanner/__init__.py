"""scanner: find known abuse imagery in URL-list datasets without ever keeping image content."""

__version__ = "0.1.0"
