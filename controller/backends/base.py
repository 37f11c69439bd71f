"""The one provisioning interface every backend kind implements, and the registry of implementations.

The lease service calls ``provision`` after the store has claimed the allocations and ``release`` before it
gives them back. ``provision`` may be called again for a lease that is still ``provisioning`` (e.g. after the
host's agent reported a MIG instance created on demand); it must be idempotent. It answers ``ready`` with
what the tenant needs, ``pending`` while something outside (an agent, a cloud) still has to act, or raises
:class:`ProvisionFailed`, after which the lease fails and its claims are released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from controller.placement import Allocation


class ProvisionFailed(Exception):
    """The backend could not provide the claimed allocations (the lease fails with this message)."""


@dataclass(frozen=True)
class LeaseInfo:
    """What a backend gets to know about a lease: no ORM objects cross this boundary."""

    id: str
    tenant: str
    request: dict[str, Any]
    # Host names by the placement engine's host id (the controller uses the hostname as that id).
    hosts: list[str]
    backend_names: dict[str, str] = field(default_factory=dict)  # host -> backend name


@dataclass(frozen=True)
class ProvisionResult:
    state: Literal["ready", "pending"]
    result: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@runtime_checkable
class ProvisioningBackend(Protocol):
    kind: str

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult: ...

    def release(self, lease: LeaseInfo) -> None: ...


_PROVISIONERS: dict[str, Callable[[], ProvisioningBackend]] = {}


class NoProvisioner(ProvisionFailed):
    pass


def register_provisioner(kind: str, factory: Callable[[], ProvisioningBackend]) -> None:
    _PROVISIONERS[kind] = factory


def provisioner_for(kind: str) -> ProvisioningBackend:
    try:
        factory = _PROVISIONERS[kind]
    except KeyError:
        raise NoProvisioner(
            f"no provisioning for backend kind {kind!r} yet (available: {', '.join(sorted(_PROVISIONERS))})"
        ) from None
    return factory()


def provisioner_kinds() -> list[str]:
    return sorted(_PROVISIONERS)
