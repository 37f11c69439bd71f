"""The one provisioning interface every backend kind implements, and the registry of implementations.

The lease service calls ``provision`` after the store has claimed the allocations and ``release`` before it
gives them back. ``provision`` may be called again for a lease that is still ``provisioning`` (e.g. after the
host's agent reported a MIG instance created on demand); it must be idempotent. It answers ``ready`` with
what the tenant needs, ``pending`` while something outside (an agent, a cloud) still has to act, or raises
:class:`ProvisionFailed`, after which the lease fails and its claims are released, or :class:`TryElsewhere`
(e.g. Nova's "No valid host"), after which the lease service releases the claims, excludes the hosts it was
given and places the lease again (up to ``MAX_CANDIDATES`` times) before the lease fails.

A backend is made per use by its factory, which is given the store (:class:`controller.store.db.Database`):
backends that keep per-lease records (EKS nodegroups, Ironic nodes, Nova servers) read and write through it.
What a backend needs of the lease tables (when the lease started provisioning, which hosts other leases use)
comes in :class:`LeaseInfo`, read by the lease service (``controller.leases.backend_call``); backends never query
those tables during ``provision`` or ``release``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from controller.placement import Allocation
from controller.store.db import Database


class ProvisionFailed(Exception):
    """The backend could not provide the claimed allocations (the lease fails with this message)."""


class TryElsewhere(ProvisionFailed):
    """These hosts cannot take the lease now (capacity gone, no valid host): place it again without them.

    ``hosts`` names the placement hosts to exclude (default: every host the lease was given).
    """

    def __init__(self, message: str, hosts: list[str] | None = None) -> None:
        super().__init__(message)
        self.hosts = hosts


@dataclass(frozen=True)
class LeaseInfo:
    """What a backend gets to know about a lease: no ORM objects cross this boundary, and a backend never reads
    the lease tables (leases, their transitions, slice claims) itself: what it needs of them is here."""

    id: str
    tenant: str
    request: dict[str, Any]
    # Host names by the placement engine's host id (the controller uses the hostname as that id).
    hosts: list[str]
    backend_names: dict[str, str] = field(default_factory=dict)  # host -> backend name
    # Given to ``provision``: when the lease last entered ``provisioning`` (deploy and boot deadlines count from it).
    provisioning_since: datetime | None = None
    # Given to ``release``: hosts of this lease's backends where other leases hold live claims (not idle).
    hosts_in_use: frozenset[str] = frozenset()

    def seconds_provisioning(self, now: datetime | None = None) -> float:
        """How long the lease has been provisioning (0 when not known)."""
        if self.provisioning_since is None:
            return 0.0
        return ((now or datetime.now(UTC)) - self.provisioning_since).total_seconds()


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


ProvisionerFactory = Callable[[Database], ProvisioningBackend]

SLICE_KINDS = frozenset({"gpu", "mig", "timeslice", "mps", "vgpu"})


@dataclass(frozen=True)
class Capabilities:
    """What a backend kind can hand out, declared so placement refuses what it cannot do before any claim
    (``controller.placement.filters``: the ``capability`` filter), with the reason instead of a late failure."""

    slice_kinds: frozenset[str] = SLICE_KINDS
    # Hosts are leased whole: a lease takes every GPU of each of its hosts (Ironic bare metal).
    whole_node: bool = False
    # One kind of slice per host and lease (a Nova server gets one flavor: whole GPUs or vGPUs).
    one_kind_per_host: bool = False
    # Why the kinds it does not offer are missing (shown in refusals).
    why_not: str = ""


_PROVISIONERS: dict[str, ProvisionerFactory] = {}
_CAPABILITIES: dict[str, Capabilities] = {}


class NoProvisioner(ProvisionFailed):
    pass


def register_provisioner(kind: str, factory: ProvisionerFactory, capabilities: Capabilities | None = None) -> None:
    """Register (or replace) a kind's provisioning; its capabilities stay as first declared unless given."""
    _PROVISIONERS[kind] = factory
    if capabilities is not None:
        _CAPABILITIES[kind] = capabilities


def capabilities_for(kind: str) -> Capabilities:
    return _CAPABILITIES.get(kind, Capabilities())


def provisioner_for(kind: str, db: Database) -> ProvisioningBackend:
    try:
        factory = _PROVISIONERS[kind]
    except KeyError:
        raise NoProvisioner(
            f"no provisioning for backend kind {kind!r} yet (available: {', '.join(sorted(_PROVISIONERS))})"
        ) from None
    return factory(db)


def provisioner_kinds() -> list[str]:
    return sorted(_PROVISIONERS)
