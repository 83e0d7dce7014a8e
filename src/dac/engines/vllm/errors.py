"""The error a malformed DAC request raises (the server answers HTTP 400 with its message)."""

from __future__ import annotations


class DACOptionError(ValueError):
    """A malformed DAC option (the server answers HTTP 400 with this message)."""
