"""What a call to a lease's backend is given, read from the store in one session: backends never read leases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.backends.contract import LeaseInfo
from controller.leases.fleet import allocation_from_dict
from controller.placement import Allocation
from controller.store.db import Database
from controller.store.models import Host, Lease, LeaseTransition, SliceClaim


def lease_info(session: Session, lease: Lease, allocs: list[Allocation], state: str) -> LeaseInfo:
    """The lease as its backend sees it: for ``provisioning``, since when; for ``releasing``, the hosts of its
    backends that other leases still use."""
    hosts = sorted({a.host_id for a in allocs})
    if state == "provisioning":
        return LeaseInfo(
            lease.id, lease.tenant, lease.request, hosts, provisioning_since=provisioning_since(session, lease)
        )
    if state == "releasing":
        return LeaseInfo(lease.id, lease.tenant, lease.request, hosts, hosts_in_use=hosts_in_use(session, lease, hosts))
    return LeaseInfo(lease.id, lease.tenant, lease.request, hosts)


def provisioning_since(session: Session, lease: Lease) -> datetime:
    """When the lease last entered ``provisioning`` (the start of a backend's deploy / boot deadline)."""
    at = session.scalar(
        select(LeaseTransition.at)
        .where(LeaseTransition.lease_id == lease.id, LeaseTransition.to_state == "provisioning")
        .order_by(LeaseTransition.id.desc())
        .limit(1)
    )
    if at is None:
        at = lease.updated_at
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def hosts_in_use(session: Session, lease: Lease, hostnames: list[str]) -> frozenset[str]:
    """Hosts of the backends of ``hostnames`` on which another lease holds a live claim."""
    backends = select(Host.backend_id).where(Host.hostname.in_(hostnames), Host.backend_id.is_not(None))
    used = session.scalars(
        select(Host.hostname)
        .join(SliceClaim, SliceClaim.host_id == Host.id)
        .where(SliceClaim.released_at.is_(None), SliceClaim.lease_id != lease.id, Host.backend_id.in_(backends))
        .distinct()
    )
    return frozenset(used)


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
        return BackendCall(lease_info(session, lease, allocs, state), allocs, lease.backend or "static")
