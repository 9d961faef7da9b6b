"""TMR: a high-availability floating-license server on the 2-out-of-3 principle."""

__version__ = "0.1.0"
