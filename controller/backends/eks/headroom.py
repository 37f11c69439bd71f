"""EKS headroom: hosts for the nodes a nodegroup could still start (``maxSize - desiredSize``, at least one), and
leases waiting on them moved onto a node of the nodegroup that registered or became idle."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from controller.backends.contract import ClaimMove, LeaseDirectory
from controller.backends.eks.cluster import (
    EFA_LABEL,
    PLACEMENT_GROUP_HOST_LABEL,
    SCALE_REQUESTED_LABEL,
    SOURCE_LABEL,
    is_headroom,
)
from controller.backends.eks.config import EksConfig
from controller.backends.eks.devices import device_docs
from controller.backends.eks.karpenter import group_of
from controller.backends.eks.report import SyncReport
from controller.backends.hostsync import apply_devices
from controller.fleet.states import set_host_status
from controller.store.db import Database
from controller.store.models import Backend, Host
from drivers.eks.kube_labels import INSTANCE_TYPE_LABEL, NODEGROUP_LABEL, REGION_LABEL, ZONE_LABEL

log = logging.getLogger("gpufabric.backends.eks.sync")

HEADROOM_COST = "100"  # placement prefers running nodes; a new node is the last resort


def _headroom_name(backend: str, nodegroup: str, k: int) -> str:
    return f"{backend}.{nodegroup}.headroom-{k}"


def sync_headroom(
    session: Session,
    config: EksConfig,
    backend_id: int,
    backend_name: str,
    hosts: dict[str, Host],
    busy: set[int],
    scaling: dict[str, tuple[int, int]],
    now: datetime,
    report: SyncReport,
    block_ends: dict[str, str] | None = None,
) -> None:
    for ng in config.gpu_nodegroups:
        if ng.name not in scaling:
            continue
        desired, maximum = scaling[ng.name]
        mine = sorted(
            (h for h in hosts.values() if is_headroom(h) and (h.labels or {}).get(NODEGROUP_LABEL) == ng.name),
            key=lambda h: h.hostname,
        )
        free = [h for h in mine if h.id not in busy]
        # At maxSize one headroom host stays: a lease placed on it gets the at_max policy's answer (the figures).
        wanted = max(1, maximum - desired)
        for host in free[wanted:]:
            session.delete(host)
            report.removed.append(host.hostname)
            report.changed.append(host.hostname)
        free = free[:wanted]
        taken = {h.hostname for h in mine}
        k = 0
        while len(free) < wanted:
            while _headroom_name(backend_name, ng.name, k) in taken:
                k += 1
            host = Host(hostname=_headroom_name(backend_name, ng.name, k), backend_id=backend_id, registered_at=now)
            taken.add(host.hostname)
            session.add(host)
            free.append(host)
            report.changed.append(host.hostname)
        labels = {
            SOURCE_LABEL: "headroom",
            NODEGROUP_LABEL: ng.name,
            INSTANCE_TYPE_LABEL: ng.instance_types[0] if ng.instance_types else "",
            REGION_LABEL: config.region,
            "gpufabric.dev/cost": HEADROOM_COST,
        }
        if len(ng.availability_zones) == 1:
            labels[ZONE_LABEL] = ng.availability_zones[0]
        if ng.placement_group:
            labels[PLACEMENT_GROUP_HOST_LABEL] = ng.placement_group
        if ng.efa and ng.efa_interfaces:
            labels[EFA_LABEL] = str(ng.efa_interfaces)
        if block_ends and ng.name in block_ends:
            labels["gpufabric.dev/usable-until"] = block_ends[ng.name]  # placement's capacity-window filter
        for host in mine:
            if host.id in busy:
                host.last_seen = now  # keep a claimed headroom host reachable while its lease waits
        for host in free:
            docs = device_docs(host.hostname, None, ng, config.sharing.get(ng.name))
            before = (dict(host.labels or {}), host.inventory_hash, host.status)
            host.labels = labels
            host.inventory_hash = apply_devices(host, docs, now)
            set_host_status(host, "ready")
            host.health = "healthy"
            host.last_seen = now
            if before != (host.labels, host.inventory_hash, host.status):
                report.changed.append(host.hostname)
        report.headroom[ng.name] = wanted


def bind_waiting(db: Database, directory: LeaseDirectory, backend_name: str) -> dict[str, str]:
    """Move each provisioning lease's claims from headroom hosts to idle ready nodes of the same nodegroup."""
    bound: dict[str, str] = {}
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == backend_name))
        if backend is None:
            return bound
        hosts = list(
            session.scalars(select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices)))
        )
        headroom_ids = {h.id: h for h in hosts if is_headroom(h)}
        if not headroom_ids:
            return bound
        backend_id = backend.id
    waiting = [c for c in directory.provisioning_claims(backend_id) if c.host_id in headroom_ids]
    used: set[int] = set()
    for claim in waiting:
        lease_id, headroom_id = claim.lease_id, claim.host_id
        busy = directory.live_claim_hosts(backend_id)
        with db.session() as session:
            placeholder = session.get(Host, headroom_id)
            if placeholder is None:
                continue
            group = group_of(placeholder.labels)
            candidates = [
                h
                for h in session.scalars(
                    select(Host).where(Host.backend_id == placeholder.backend_id).options(selectinload(Host.devices))
                )
                if not is_headroom(h)
                and group_of(h.labels) == group
                and h.status == "ready"
                and h.admin_state == "active"
                and h.id not in busy
                and h.id not in used
                and len(h.devices) >= len(placeholder.devices)
            ]
            if not candidates:
                continue
            node = sorted(candidates, key=lambda h: h.hostname)[0]
            try:
                _move_claims(session, directory, lease_id, placeholder, node)
                session.commit()
            except IntegrityError:
                session.rollback()  # someone claimed the node meanwhile; try again at the next sync
                continue
            used.add(node.id)
            bound[lease_id] = node.hostname
            log.info("lease %s: moved from %s to node %s", lease_id, placeholder.hostname, node.hostname)
    return bound


def _move_claims(session: Session, directory: LeaseDirectory, lease_id: str, placeholder: Host, node: Host) -> None:
    by_index = {d.index: d.uuid for d in node.devices}
    renamed = {d.uuid: by_index[d.index] for d in placeholder.devices if d.index in by_index}
    move = ClaimMove(lease_id, (placeholder.id, placeholder.hostname), (node.id, node.hostname), renamed)
    directory.move_claims(session, move)
    labels = dict(placeholder.labels or {})
    labels.pop(SCALE_REQUESTED_LABEL, None)
    placeholder.labels = labels
    session.flush()
