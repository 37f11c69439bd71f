"""Errors raised by the sharing package (one hierarchy, caught once by the CLI)."""

from __future__ import annotations


class SharingError(Exception):
    """Base class for every time-slicing / MPS error."""


class SharingConfigError(SharingError):
    """A device-plugin config that the NVIDIA device plugin would refuse; the message names the field."""


class SharingApplyError(SharingError):
    """Applying a valid config failed on this host (NVML refused, MPS daemon command failed, ...)."""
