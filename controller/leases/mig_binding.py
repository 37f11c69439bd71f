"""Binding MIG instances created on demand to their leases once the host's agent reports them.

A lease that claimed a MIG instance the host does not have yet waits in ``provisioning``: the instance rides on
the host's desired MIG config (``controller.fleet.desired`` derives it from the live claims), the agent creates it
and reports its UUID. After that report the lease's allocation gets the UUID of the instance at the placement the
engine chose (the agent creates it there or nowhere) and the lease is provisioned again; the claims, made on that
placement's memory slices, stay as they are.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.leases.index import PlacementIndex
from controller.leases.provisioning import Provisioning
from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.models import Device, Lease, SliceClaim
from controller.store.models import Host as HostRow


class MigBinding:
    def __init__(self, db: Database, index: PlacementIndex, provisioning: Provisioning) -> None:
        self.db = db
        self.index = index
        self.provisioning = provisioning

    def complete_pending(self, host_id: int) -> None:
        """Bind MIG instances the agent created for ``provisioning`` leases on this host, then provision again
        every ``provisioning`` lease there whose backend kind waits on agents (what it waits for may be in this
        report: a MIG instance, or the device access grant of an agent that enforces it,
        ``controller.backends.agent_access``)."""
        with self.db.session() as session:
            hostname = session.scalar(select(HostRow.hostname).where(HostRow.id == host_id))
            live = select(SliceClaim.lease_id).where(SliceClaim.host_id == host_id, SliceClaim.released_at.is_(None))
            pending = []
            for lease in session.scalars(
                select(Lease).where(Lease.id.in_(live.distinct()), Lease.state == "provisioning")
            ):
                binds = any(
                    a.get("create") and not a.get("mig_uuid") and a["host"] == hostname for a in lease.allocations
                )
                capabilities = self.provisioning.backends.capabilities(lease.backend)
                if binds or (capabilities is not None and capabilities.waits_on_agents):
                    pending.append((lease.id, binds))
        changed = False
        for lease_id, binds in pending:
            if binds:
                changed |= self._bind_instances(lease_id, host_id)
            self.provisioning.provision(lease_id)
        if changed:
            self.index.refresh([host_id])

    def _bind_instances(self, lease_id: str, host_id: int) -> bool:
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            host = session.scalar(
                select(HostRow)
                .where(HostRow.id == host_id)
                .options(selectinload(HostRow.devices).selectinload(Device.mig_instances))
            )
            if lease is None or host is None or lease.state != "provisioning":
                return False
            taken = _claimed_mig_uuids(session, host_id, exclude=lease_id)
            allocs = [dict(a) for a in lease.allocations]
            bound = False
            for a in allocs:
                if not (a.get("create") and not a.get("mig_uuid") and a["host"] == host.hostname):
                    continue
                device = next((d for d in host.devices if d.uuid == a["device"]), None)
                if device is None:
                    continue
                want = (a["placement"]["start"], a["placement"]["size"])
                # The agent creates a lease instance exactly where the engine placed it, or not at all (its
                # report then says why): only an instance at that placement is this allocation's.
                m = next(
                    (
                        m
                        for m in device.mig_instances
                        if m.profile == a["profile"]
                        and m.uuid
                        and m.uuid not in taken
                        and (m.placement_start, m.placement_size) == want
                    ),
                    None,
                )
                if m is None:
                    continue
                taken.add(m.uuid or "")
                a["mig_uuid"] = m.uuid
                bound = True
            if bound:
                lease.allocations = allocs
                mark_hosts_changed(session, [host_id])
            return bound


def _claimed_mig_uuids(session: Session, host_id: int, *, exclude: str) -> set[str]:
    live = select(SliceClaim.lease_id).where(SliceClaim.host_id == host_id, SliceClaim.released_at.is_(None))
    out: set[str] = set()
    for lease in session.scalars(select(Lease).where(Lease.id.in_(live.distinct()), Lease.id != exclude)):
        out |= {a["mig_uuid"] for a in lease.allocations if a.get("mig_uuid")}
    return out
