"""Errors of the desired-state documents (mig-parted configs, device-plugin configs) both sides validate.

One hierarchy: the controller answers any :class:`DesiredStateError` with 422, the agent reports it as a
failed apply. ``loc`` is where in the document the problem is (keys and list positions, as the user wrote
them), so an API error can name the field.
"""

from __future__ import annotations


class DesiredStateError(ValueError):
    """A desired-state document that cannot be applied as written; the message names the field."""

    def __init__(self, message: str, *, loc: tuple[int | str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class MigError(Exception):
    """Base of every error about MIG configs and MIG changes (the agent's MIG package adds its own)."""


class MigConfigError(MigError, DesiredStateError):
    """A mig-parted config that cannot be read or is not valid."""


class SharingError(Exception):
    """Base class for every time-slicing / MPS error (the agent's sharing package adds its own)."""


class SharingConfigError(SharingError, DesiredStateError):
    """A device-plugin config that the NVIDIA device plugin would refuse; the message names the field."""
