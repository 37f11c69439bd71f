"""Cyborg's deployables and accelerator requests, and Placement's ``PGPU`` usage, against gpufabric's claims (part
of ``CyborgBackend.reconcile``). Everything is reported, nothing is fixed:

- Placement: per compute node, ``PGPU`` used in Placement vs GPUs gpufabric has claimed there (``used``);
- deployables: a GPU gpufabric placed on whose Cyborg deployable is gone (``missing_deployable``), a deployable
  with no resource provider in Placement (``deployable_without_provider``);
- accelerator requests: per compute node, ARQs bound there vs GPUs claimed (``bound_arqs``); an ARQ that belongs to
  no server of a live gpufabric lease is an orphan (made behind gpufabric's back, or left by a deleted server).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from controller.backends.contract import LeaseDirectory, LeaseStatus
from controller.backends.openstack.common import HYPERVISOR_LABEL
from controller.backends.openstack.hosts import Observed, backend_row
from controller.store.db import Database
from controller.store.models import Host
from drivers.openstack import ExpectedHost, ExpectedUsage, compare
from drivers.openstack.cyborg import RESOURCE_CLASS, Arq, Deployable


@dataclass
class CyborgObserved(Observed):
    """What one pass saw: Nova's tagged servers (``tagged``), Placement, and Cyborg's deployables and ARQs."""

    deployables: list[Deployable] = field(default_factory=list)
    arqs: list[Arq] = field(default_factory=list)


def _mismatch(host: str, kind: str, expected: Any, actual: Any, message: str) -> dict[str, Any]:
    return {
        "host": host,
        "kind": kind,
        "resource_class": RESOURCE_CLASS,
        "trait": None,
        "expected": expected,
        "actual": actual,
        "message": message,
    }


def orphan_arqs(arqs: list[Arq], servers: dict[str, str], leases: Mapping[str, LeaseStatus]) -> list[dict[str, Any]]:
    """ARQs that no server of a live gpufabric lease owns. ``servers``: server id -> lease id (tagged servers);
    ``leases``: the store's leases among those, by id."""
    out = []
    for arq in sorted(arqs, key=lambda a: a.uuid):
        lease_id = servers.get(arq.instance_uuid or "")
        status = leases.get(lease_id or "")
        state = status.state if status is not None else None
        if lease_id is not None and status is not None and status.live:
            continue
        if arq.instance_uuid is None:
            why = "bound to no server (made outside gpufabric, or its server never booted)"
        elif lease_id is None:
            why = f"for server {arq.instance_uuid}, which is not a gpufabric server"
        else:
            why = f"for server {arq.instance_uuid} of lease {lease_id}, which is {state or 'gone'}"
        out.append(
            {
                "resource": "cyborg_arq",
                "id": arq.uuid,
                "state": arq.state,
                "device_profile": arq.device_profile_name,
                "instance_uuid": arq.instance_uuid,
                "hostname": arq.hostname,
                "lease_id": lease_id,
                "message": f"accelerator request {arq.uuid} ({arq.device_profile_name}, {arq.state}) {why}",
                "action": "reported",
            }
        )
    return out


def cyborg_check(db: Database, directory: LeaseDirectory, name: str, seen: CyborgObserved) -> dict[str, Any]:
    with db.session() as session:
        backend = backend_row(session, name, "cyborg")
        hosts = list(
            session.scalars(
                select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices))
            ).unique()
        )
        claimed: Counter[int] = Counter()
        claimed_devices: dict[int, set[str]] = defaultdict(set)
        for claim in directory.live_claims(h.id for h in hosts):
            claimed[claim.host_id] += 1
            claimed_devices[claim.host_id].add(claim.device_uuid)
        servers = {t.id: t.lease_id for t in seen.tagged}
        states = directory.lease_status(servers.values())
        placement_name = {h.id: str((h.labels or {}).get(HYPERVISOR_LABEL) or h.hostname) for h in hosts}
        device_deployable = {
            (h.id, d.uuid): str((d.details or {}).get("deployable") or "") for h in hosts for d in h.devices
        }
    mismatches: list[dict[str, Any]] = []
    if seen.placement is not None:
        expected = [
            ExpectedHost(host=placement_name[h.id], resources={RESOURCE_CLASS: ExpectedUsage(used=claimed[h.id])})
            for h in hosts
        ]
        mismatches += [m.model_dump(mode="json") for m in compare(seen.placement, expected, report_unexpected=False)]
    known = {d.uuid for d in seen.deployables}
    providers = {p.uuid for p in seen.placement.providers} if seen.placement is not None else set()
    for h in hosts:
        for device_uuid in sorted(claimed_devices[h.id]):
            deployable = device_deployable.get((h.id, device_uuid))
            if deployable and deployable not in known:
                mismatches.append(
                    _mismatch(
                        placement_name[h.id],
                        "missing_deployable",
                        deployable,
                        None,
                        f"{placement_name[h.id]}: claimed GPU {device_uuid} has no Cyborg deployable {deployable}",
                    )
                )
    for d in seen.deployables:
        if seen.placement is not None and (d.rp_uuid is None or d.rp_uuid not in providers):
            mismatches.append(
                _mismatch(
                    d.name.rsplit("_", 1)[0],
                    "deployable_without_provider",
                    "provider",
                    d.rp_uuid,
                    f"Cyborg deployable {d.name} has no resource provider in Placement ({d.rp_uuid or 'none'})",
                )
            )
    bound = Counter(a.hostname for a in seen.arqs if a.state == "Bound" and a.hostname)
    for h in hosts:
        host = placement_name[h.id]
        if bound[host] != claimed[h.id]:
            mismatches.append(
                _mismatch(
                    host,
                    "bound_arqs",
                    claimed[h.id],
                    bound[host],
                    f"{host}: {bound[host]} Cyborg accelerator request(s) bound, {claimed[h.id]} GPU(s) claimed "
                    "by gpufabric",
                )
            )
    orphans = orphan_arqs(seen.arqs, servers, states)
    return {
        "checked": seen.placement is not None,
        "hosts": len(hosts),
        "mismatches": mismatches,
        "cyborg": {
            "deployables": len(seen.deployables),
            "arqs": len(seen.arqs),
            "bound_arqs": sum(bound.values()),
            "orphan_arqs": orphans,
        },
    }
