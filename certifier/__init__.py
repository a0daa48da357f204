"""Certifier: certify known-good combinations of multi-component software on a real testbed."""

__version__ = "0.1.0"
