"""What the ``ironic`` and ``nova`` syncs share: the hosts a cloud shows (:class:`HostDoc`) written into the store.

A host that is placeable is ``ready``; one that is not (a deployed or maintenance node, a down hypervisor) is
``unreachable``; a host no longer in the cloud is deleted, or kept ``unreachable`` while a live claim holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.backends.contract import LeaseDirectory
from controller.backends.hostsync import apply_devices
from controller.backends.openstack.common import (
    AZ_LABEL,
    COST_LABEL,
    REGION_LABEL,
    SOURCE_LABEL,
    OpenStackBackendError,
)
from controller.backends.openstack.config import OpenStackBackendConfig
from controller.fleet.states import set_host_status
from controller.observability.redact import redact
from controller.store.db import Database
from controller.store.models import Backend, Host
from drivers.gpus.catalog import Product
from drivers.openstack import PlacementView, TaggedResource


@dataclass
class SyncResult:
    hosts: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hosts": sorted(self.hosts),
            "changed": sorted(set(self.changed)),
            "removed": sorted(self.removed),
            "unreachable": sorted(self.unreachable),
            "skipped": self.skipped,
            "errors": redact(self.errors),
        }


@dataclass
class HostDoc:
    """One host as a backend sees it: what the store's Host / Device rows must say."""

    name: str
    placeable: bool
    labels: dict[str, str]
    devices: list[dict[str, Any]]
    # Labels the sync owns on this host: one missing from ``labels`` is removed (a host left an aggregate).
    owned_labels: frozenset[str] = frozenset()


def backend_row(session: Session, name: str, kind: str) -> Backend:
    row = session.scalar(select(Backend).where(Backend.name == name))
    if row is None or row.kind != kind:
        raise OpenStackBackendError(f"backend {name} is not of kind {kind}")
    return row


def base_labels(config: OpenStackBackendConfig, source: str) -> dict[str, str]:
    labels = {SOURCE_LABEL: source, COST_LABEL: str(config.cost)}
    if config.region:
        labels[REGION_LABEL] = config.region
    if config.az:
        labels[AZ_LABEL] = config.az
    return labels


def device_doc(uuid: str, index: int, product: Product | None, model: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "index": index,
        "model": product.name if product else model,
        "memory_mib": (product.memory_mib if product else 0) or 0,
        "details": details,
    }


def write_hosts(
    db: Database, directory: LeaseDirectory, backend_name: str, kind: str, docs: list[HostDoc], result: SyncResult
) -> None:
    """Upsert the backend's hosts and devices from ``docs``; hosts no longer there go (unreachable while claimed)."""
    now = datetime.now(UTC)
    with db.session() as session:
        backend = backend_row(session, backend_name, kind)
        busy = directory.live_claim_hosts(backend.id)
        names = [d.name for d in docs]
        rows = {
            h.hostname: h
            for h in session.scalars(
                select(Host)
                .where((Host.backend_id == backend.id) | Host.hostname.in_(names))
                .options(selectinload(Host.devices))
            ).unique()
        }
        for doc in docs:
            result.hosts.append(doc.name)
            host = rows.get(doc.name)
            if host is not None and host.backend_id not in (None, backend.id):
                result.errors.append(f"{doc.name}: already a host of another backend; not taken over")
                continue
            if host is None:
                host = Host(hostname=doc.name, backend_id=backend.id, labels={}, registered_at=now)
                session.add(host)
            before = (host.backend_id, dict(host.labels or {}), host.status, host.inventory_hash)
            host.backend_id = backend.id
            kept = {k: v for k, v in (host.labels or {}).items() if k not in doc.owned_labels}
            host.labels = {**kept, **doc.labels}
            set_host_status(host, "ready" if doc.placeable else "unreachable")
            host.health = "healthy"
            host.last_seen = now
            host.inventory_hash = apply_devices(host, doc.devices, now)
            if before != (host.backend_id, host.labels, host.status, host.inventory_hash):
                result.changed.append(doc.name)
            if not doc.placeable:
                result.unreachable.append(doc.name)
        present = set(names)
        for host in rows.values():
            if host.backend_id != backend.id or host.hostname in present:
                continue
            if host.id in busy:
                if set_host_status(host, "unreachable"):
                    result.changed.append(host.hostname)
                result.unreachable.append(host.hostname)
            else:
                session.delete(host)
                result.removed.append(host.hostname)
                result.changed.append(host.hostname)


@dataclass
class Observed:
    """What one pass saw in the cloud (shared by sync and reconcile, so the cloud is listed once)."""

    docs: list[HostDoc]
    skipped: list[str]
    tagged: list[TaggedResource]
    placement: PlacementView | None = None
