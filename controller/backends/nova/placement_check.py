"""Placement's GPU usage per compute node against gpufabric's live claims there (part of ``NovaBackend.reconcile``):
``VGPU`` instances and PCI resource classes; every difference is reported, nothing is fixed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from controller.backends.contract import LeaseDirectory
from controller.backends.openstack.common import HYPERVISOR_LABEL
from controller.backends.openstack.hosts import Observed, backend_row
from controller.store.db import Database
from controller.store.models import Host
from drivers.openstack import ExpectedHost, ExpectedUsage, compare


def placement_check(db: Database, directory: LeaseDirectory, name: str, seen: Observed) -> dict[str, Any]:
    """Placement's GPU usage per compute node against gpufabric's live claims there."""
    if seen.placement is None:
        return {"checked": False, "reason": "Placement not read"}
    with db.session() as session:
        backend = backend_row(session, name, "nova")
        hosts = list(
            session.scalars(
                select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices))
            ).unique()
        )
        rc_of = {d.uuid: (d.details or {}).get("resource_class") for h in hosts for d in h.devices}
        claimed: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        backed: set[tuple[str, int]] = set()
        for claim in directory.live_claims(h.id for h in hosts):
            if claim.kind == "vgpu" and claim.resource.startswith("mig:"):
                # A MIG-backed vGPU holds one row per memory slice of its GPU instance: it is one VGPU.
                if (claim.lease_id, claim.allocation) in backed:
                    continue
                backed.add((claim.lease_id, claim.allocation))
            rc = "VGPU" if claim.kind == "vgpu" else rc_of.get(claim.device_uuid)
            if rc:
                claimed[claim.host_id][rc] += 1
        expected = []
        for h in hosts:
            rcs = {str(rc) for d in h.devices if (rc := (d.details or {}).get("resource_class"))}
            name_in_placement = str((h.labels or {}).get(HYPERVISOR_LABEL) or h.hostname)
            expected.append(
                ExpectedHost(
                    host=name_in_placement,
                    resources={rc: ExpectedUsage(used=claimed[h.id].get(rc, 0)) for rc in sorted(rcs)},
                )
            )
    mismatches = compare(seen.placement, expected, report_unexpected=False)
    return {
        "checked": True,
        "hosts": len(expected),
        "mismatches": [m.model_dump(mode="json") for m in mismatches],
    }
