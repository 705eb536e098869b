"""kdbench's version, in its own module so that any layer can record it without importing
the public API."""

__version__ = "0.1.0"
