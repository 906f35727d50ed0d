"""Helpers for the transfer-learning workshop kit."""
__version__ = "0.1.0"
