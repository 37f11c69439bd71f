"""A host's effective desired state: its own overrides over its pool's policy, plus what leases hold.

MIG instances that leases created on demand are added to the selected mig-parted config per GPU (entries for
those GPUs by index, the rest unchanged), so the agent creates them and, once their lease is released,
destroys them again: the desired state is always derived from the live claims in the store.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.models import DesiredOverride, Host, HostTask, Lease, SliceClaim
from drivers.contract.protocol import (
    DesiredState,
    LeasedSlice,
    MigDesired,
    SharingDesired,
    Task,
    desired_state_revision,
)

LEASED_CONFIG_SUFFIX = "+leases"


def effective_desired(session: Session, host: Host) -> DesiredState:
    policy = host.pool.policy if host.pool is not None else {}
    mig_doc = policy.get("mig")
    sharing_doc = policy.get("sharing")
    override = session.get(DesiredOverride, host.id)
    if override is not None:
        if override.mig is not None:
            mig_doc = override.mig
        if override.sharing is not None:
            sharing_doc = override.sharing
    leased = leased_slices(session, host)
    on_demand: dict[str, Counter[str]] = {}
    for s in leased:
        if s.kind == "mig" and s.profile and s.created:
            on_demand.setdefault(s.device_uuid, Counter())[s.profile] += 1
    if on_demand:
        mig_doc = with_leased_instances(mig_doc, host, on_demand)
    mig = MigDesired.model_validate(mig_doc) if mig_doc else None
    sharing = SharingDesired.model_validate(sharing_doc) if sharing_doc else None
    return DesiredState(
        revision=desired_state_revision(mig, sharing),
        mig=mig,
        sharing=sharing,
        leases=[s.wire for s in leased],
    )


class _Leased:
    __slots__ = ("created", "device_uuid", "kind", "profile", "wire")

    def __init__(self, wire: LeasedSlice, created: bool) -> None:
        self.wire = wire
        self.created = created
        self.device_uuid = wire.device_uuid
        self.kind = wire.kind
        self.profile = wire.profile


def leased_slices(session: Session, host: Host) -> list[_Leased]:
    live = select(SliceClaim.lease_id).where(SliceClaim.host_id == host.id, SliceClaim.released_at.is_(None))
    out: list[_Leased] = []
    for lease in session.scalars(select(Lease).where(Lease.id.in_(live.distinct())).order_by(Lease.created_at)):
        for a in lease.allocations:
            if a["host"] != host.hostname:
                continue
            wire = LeasedSlice(
                lease=lease.id,
                tenant=lease.tenant,
                device_uuid=a["device"],
                kind=a["kind"],
                units=a.get("units", 1),
                profile=a.get("profile"),
                mig_uuid=a.get("mig_uuid"),
                placement_start=(a.get("placement") or {}).get("start") if a["kind"] == "mig" else None,
            )
            out.append(_Leased(wire, bool(a.get("create"))))
    return out


def _selects(entry: dict[str, Any], index: int) -> bool:
    devices = entry.get("devices", "all")
    return devices == "all" or (isinstance(devices, list) and index in devices)


def with_leased_instances(
    mig_doc: dict[str, Any] | None, host: Host, on_demand: dict[str, Counter[str]]
) -> dict[str, Any]:
    """The mig-parted document with a config ``<selected>+leases``: each GPU that has instances created on
    demand gets its own entry (its base entry's instances plus those), the other GPUs keep their entries."""
    doc: dict[str, Any] = (
        copy.deepcopy(mig_doc) if mig_doc else {"config": {"version": "v1", "mig-configs": {}}, "selected": ""}
    )
    config: dict[str, Any] = doc["config"]
    base_entries: list[dict[str, Any]] = config.get("mig-configs", {}).get(doc["selected"], [])
    index_of = {d.uuid: d.index for d in host.devices}
    all_indexes = sorted(index_of.values())
    leased_indexes = {index_of[u]: c for u, c in on_demand.items() if u in index_of}
    entries: list[dict[str, Any]] = []
    for entry in base_entries:
        keep = [i for i in all_indexes if _selects(entry, i) and i not in leased_indexes]
        if keep:
            entries.append({**entry, "devices": "all" if keep == all_indexes else keep})
    for index, counts in sorted(leased_indexes.items()):
        base = next((e for e in base_entries if _selects(e, index)), None)
        wanted = Counter({k: int(v) for k, v in ((base or {}).get("mig-devices") or {}).items()})
        if base is not None and not base.get("mig-enabled"):
            wanted = Counter()
        wanted.update(counts)
        leased: dict[str, Any] = {"devices": [index], "mig-enabled": True, "mig-devices": dict(sorted(wanted.items()))}
        if base is not None and "device-filter" in base:
            leased["device-filter"] = base["device-filter"]
        entries.append(leased)
    name = (doc["selected"] or "leases") + LEASED_CONFIG_SUFFIX
    config.setdefault("version", "v1")
    config.setdefault("mig-configs", {})[name] = entries
    doc["selected"] = name
    return doc


def pending_tasks(session: Session, host_id: int) -> list[Task]:
    rows = session.scalars(
        select(HostTask)
        .where(HostTask.host_id == host_id, HostTask.status.in_(("pending", "running")))
        .order_by(HostTask.created_at)
    )
    return [
        Task(id=r.id, kind=r.kind, params=r.params, status=r.status, created_at=r.created_at)  # type: ignore[arg-type]
        for r in rows
    ]
