"""What the fleet and host pages read from the store: hosts with GPU counts, and who holds which slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.leases.fleet import to_placement_host
from controller.store.models import Device, Host, Lease, SliceClaim
from controller.validation.api import host_validation_out

UNHEALTHY = frozenset({"unhealthy", "quarantined"})


@dataclass(frozen=True)
class HostSummary:
    hostname: str
    backend: str
    pool: str
    region: str
    az: str
    status: str
    admin_state: str
    health: str
    validation: str
    models: list[str]
    gpus: int
    free: int
    leased: int
    unhealthy: int
    simulated: bool


@dataclass
class FleetGroup:
    backend: str
    pool: str
    region: str
    az: str
    hosts: list[HostSummary] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.backend} · pool {self.pool} · {self.region} / {self.az}"


@dataclass(frozen=True)
class FleetFilter:
    backend: str = ""
    pool: str = ""
    region: str = ""
    az: str = ""
    model: str = ""
    state: str = ""
    health: str = ""

    def keeps(self, h: HostSummary) -> bool:
        return (
            (not self.backend or h.backend == self.backend)
            and (not self.pool or h.pool == self.pool)
            and (not self.region or h.region == self.region)
            and (not self.az or h.az == self.az)
            and (not self.model or any(self.model.lower() in m.lower() for m in h.models))
            and (not self.state or self.state in (h.status, h.admin_state))
            and (not self.health or h.health == self.health)
        )


def live_claims(session: Session, host_ids: list[int] | None = None) -> dict[tuple[str, int], str]:
    """``(resource, slot) -> lease id`` of every live slice claim (of these hosts)."""
    stmt = select(SliceClaim.resource, SliceClaim.slot, SliceClaim.lease_id).where(SliceClaim.released_at.is_(None))
    if host_ids is not None:
        stmt = stmt.where(SliceClaim.host_id.in_(host_ids))
    return {(resource, slot): lease for resource, slot, lease in session.execute(stmt)}


def lease_tenants(session: Session, lease_ids: set[str]) -> dict[str, str]:
    if not lease_ids:
        return {}
    rows = session.execute(select(Lease.id, Lease.tenant).where(Lease.id.in_(lease_ids)))
    return {lease_id: tenant for lease_id, tenant in rows}


def _claimed_devices(claims: dict[tuple[str, int], str]) -> set[str]:
    return {resource.partition(":")[2] for resource, _ in claims}


def summarize(session: Session, row: Host, claimed: set[str]) -> HostSummary:
    placed = to_placement_host(row, lambda _kind: None)  # only where the host is (region, AZ) is read
    devices: list[Device] = list(row.devices)
    unhealthy = [d for d in devices if d.health in UNHEALTHY or d.admin_state != "active"]
    leased = [d for d in devices if d.uuid in claimed and d not in unhealthy]
    return HostSummary(
        hostname=row.hostname,
        backend=row.backend.name if row.backend else "—",
        pool=row.pool.name if row.pool else "—",
        region=placed.region,
        az=placed.az,
        status=row.status,
        admin_state=row.admin_state,
        health=row.health,
        validation=host_validation_out(session, row).state,
        models=sorted({d.model for d in devices}),
        gpus=len(devices),
        free=len(devices) - len(unhealthy) - len(leased),
        leased=len(leased),
        unhealthy=len(unhealthy),
        simulated=row.simulated,
    )


# The page renders every host it shows; past this many the filters narrow it (the API pages through any number).
FLEET_PAGE_HOSTS = 2000


@dataclass
class Fleet:
    groups: list[FleetGroup]
    shown: int
    matching: int


def fleet(session: Session, keep: FleetFilter, limit: int = FLEET_PAGE_HOSTS) -> Fleet:
    rows = session.scalars(
        select(Host)
        .order_by(Host.hostname)
        .options(selectinload(Host.devices), selectinload(Host.backend), selectinload(Host.pool))
    ).all()
    claimed = _claimed_devices(live_claims(session))
    hosts = [h for h in (summarize(session, r, claimed) for r in rows) if keep.keeps(h)]
    matching = len(hosts)
    hosts = hosts[:limit]

    def key(h: HostSummary) -> tuple[str, str, str, str]:
        return (h.backend, h.pool, h.region, h.az)

    groups = [FleetGroup(*k, hosts=list(g)) for k, g in groupby(sorted(hosts, key=key), key=key)]
    return Fleet(groups, len(hosts), matching)


def filter_choices(session: Session) -> dict[str, list[str]]:
    """The values each fleet filter can take (from every host, not only the shown ones)."""
    hosts = [h for g in fleet(session, FleetFilter()).groups for h in g.hosts]
    return {
        "backend": sorted({h.backend for h in hosts}),
        "pool": sorted({h.pool for h in hosts}),
        "region": sorted({h.region for h in hosts}),
        "az": sorted({h.az for h in hosts}),
        "state": ["ready", "registered", "unreachable", "active", "drained", "quarantined"],
        "health": sorted({h.health for h in hosts}),
    }
