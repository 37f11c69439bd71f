"""Errors raised by the sharing package (one hierarchy, caught once by the CLI).

``SharingError`` and ``SharingConfigError`` are the wire contract's (``drivers.contract.errors``): the
controller refuses a sharing config with the same error the agent raises for it.
"""

from __future__ import annotations

from drivers.contract.errors import SharingConfigError, SharingError

__all__ = ["SharingApplyError", "SharingConfigError", "SharingError"]


class SharingApplyError(SharingError):
    """Applying a valid config failed on this host (NVML refused, MPS daemon command failed, ...)."""
