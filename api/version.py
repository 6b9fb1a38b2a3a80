"""The release of this package: one leaf module, imported by the app's metadata and the console script."""
__version__ = "0.1.0"
