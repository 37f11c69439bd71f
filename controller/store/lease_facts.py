"""The values a ``LeaseDirectory`` (``controller.backends.contract``) answers with: plain frozen facts about leases and
their claims, made by the store (``controller.store.lease_directory``) so that no ORM row reaches a backend.

They live here, below the backends, because the store builds them; backends import them from the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LeaseStatus:
    """Where one lease stands: its state, whether it is live (neither finished nor just asked for: what it holds or
    is getting must not be taken away) and the reason a failed lease gives."""

    id: str
    state: str
    live: bool
    reason: str = ""


@dataclass(frozen=True)
class LiveClaim:
    """One unit a live claim holds (``resource``: ``gpu:<uuid>``, ``share:<uuid>``, ``vgpu:<uuid>``, ``mig:<uuid>``;
    ``allocation``: the index of the lease's allocation it serves)."""

    lease_id: str
    host_id: int
    device_uuid: str
    kind: str
    resource: str
    allocation: int


@dataclass(frozen=True)
class ProvisioningClaim:
    """A lease still ``provisioning`` that holds live claims on a host."""

    lease_id: str
    host_id: int


@dataclass(frozen=True)
class PlacedLease:
    """A lease that holds its hosts now (``provisioning`` or ``ready``): where, and what its backend answered."""

    id: str
    tenant: str
    state: str
    hosts: tuple[str, ...]  # host names of its allocations, sorted
    result: Mapping[str, Any] = field(default_factory=dict)  # the ready lease's result (no access secrets)


@dataclass(frozen=True)
class ClaimMove:
    """A lease's live claims on one host handed to another (EKS: from a headroom host to the node that came up)."""

    lease_id: str
    from_host: tuple[int, str]  # (host id, host name)
    to_host: tuple[int, str]
    devices: Mapping[str, str] = field(default_factory=dict)  # device UUID on from_host -> on to_host
