"""What a call to a lease's backend is given, read from the store in one session: backends never read leases."""

from __future__ import annotations

from dataclasses import dataclass

from controller.backends.base import LeaseInfo
from controller.leases.fleet import allocation_from_dict
from controller.placement import Allocation
from controller.store.db import Database
from controller.store.models import Lease


def lease_info(lease: Lease, allocs: list[Allocation]) -> LeaseInfo:
    return LeaseInfo(lease.id, lease.tenant, lease.request, sorted({a.host_id for a in allocs}))


@dataclass(frozen=True)
class BackendCall:
    """What a call to a lease's backend needs, read from the store (no ORM object leaves the session)."""

    info: LeaseInfo
    allocations: list[Allocation]
    backend: str


def backend_call(db: Database, lease_id: str, state: str) -> BackendCall | None:
    """The lease's backend call while it is in ``state``; None when it is gone or has left that state."""
    with db.session() as session:
        lease = session.get(Lease, lease_id)
        if lease is None or lease.state != state:
            return None
        allocs = [allocation_from_dict(a) for a in lease.allocations]
        return BackendCall(lease_info(lease, allocs), allocs, lease.backend or "static")
