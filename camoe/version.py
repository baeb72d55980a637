"""The package version, in a leaf module so that any module (and the CLI's ``--version``) reads it without importing
the package root or torch."""

__version__ = "0.1.0"
