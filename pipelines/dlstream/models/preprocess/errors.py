"""The error a preprocessing step raises for a payload it cannot use."""

from __future__ import annotations


class PayloadError(ValueError):
    """The payload cannot be decoded or does not fit the model; the message says why."""
