"""Applying a claim's allocations to the hosts of the index, and giving them back (under the engine's lock)."""

from __future__ import annotations

from typing import Any

from controller.placement import mig
from controller.placement.decision import Allocation, ClaimConflict, MigDestroy
from controller.placement.model import KIND_MODE, Host, MigSlot


def _device(hosts: dict[str, Host], a: Allocation) -> Any:
    host = hosts.get(a.host_id)
    d = host.device(a.device_uuid) if host else None
    if d is None:
        raise ClaimConflict(f"device {a.device_uuid} on {a.host_id} is gone")
    return d


def apply_allocation(hosts: dict[str, Host], cid: str, a: Allocation) -> None:
    """Mark what ``a`` takes as held by claim ``cid``; ``ClaimConflict`` if it is no longer free."""
    d = _device(hosts, a)
    host = hosts[a.host_id]
    if host.state != "ready" or not d.usable or d.mode != KIND_MODE[a.kind]:
        raise ClaimConflict(f"{a.device_uuid} on {a.host_id} is no longer placeable")
    if a.kind == "gpu":
        if d.claimed_by is not None:
            raise ClaimConflict(f"GPU {a.device_uuid} is taken")
        d.claimed_by = cid
    elif a.kind in ("timeslice", "mps"):
        if d.share_free() < a.units:
            raise ClaimConflict(f"GPU {a.device_uuid} has {d.share_free()} free replicas")
        d.share_claims[cid] = d.share_claims.get(cid, 0) + a.units
    elif a.kind == "vgpu":
        assert a.vgpu_type is not None
        if d.vgpu_free(a.vgpu_type) < a.units:
            raise ClaimConflict(f"GPU {a.device_uuid} has no {a.units} free {a.vgpu_type}")
        if a.placement is not None:
            # MIG-backed: the vGPU occupies exactly this GPU instance.
            m = _find_slot(d, a)
            if m is None or m.claimed_by is not None or m.pending:
                raise ClaimConflict(f"MIG {a.profile} at {a.placement[0]} on {a.device_uuid} is taken")
            m.claimed_by, m.vgpu_type = cid, a.vgpu_type
        else:
            _, n = d.vgpu_claims.get(cid, (a.vgpu_type, 0))
            d.vgpu_claims[cid] = (a.vgpu_type, n + a.units)
    else:
        assert a.profile is not None and a.placement is not None
        start, size = a.placement
        if a.create:
            if not host.on_demand_mig or (start, size) not in mig.free_placements(d.model, d.mig_layout(), a.profile):
                raise ClaimConflict(f"MIG {a.profile} at {start} on {a.device_uuid} cannot be created")
            d.mig_instances.append(MigSlot(a.profile, start, size, None, cid, pending=True, ephemeral=True))
        else:
            m = _find_slot(d, a)
            if m is None or m.claimed_by is not None or m.pending:
                raise ClaimConflict(f"MIG {a.profile} at {start} on {a.device_uuid} is taken")
            m.claimed_by = cid


def unapply_allocation(hosts: dict[str, Host], cid: str, a: Allocation) -> MigDestroy | None:
    """Give back what claim ``cid`` holds of ``a``; the MIG instance to destroy if it was created for it."""
    host = hosts.get(a.host_id)
    d = host.device(a.device_uuid) if host else None
    if d is None:
        return None
    if a.kind == "gpu":
        if d.claimed_by == cid:
            d.claimed_by = None
    elif a.kind in ("timeslice", "mps"):
        d.share_claims.pop(cid, None)
    elif a.kind == "vgpu":
        if a.placement is not None:
            m = _find_slot(d, a)
            if m is not None and m.claimed_by == cid:
                m.claimed_by, m.vgpu_type = None, None
        else:
            d.vgpu_claims.pop(cid, None)
    else:
        m = _find_slot(d, a)
        if m is None or m.claimed_by != cid:
            return None
        if m.ephemeral:
            d.mig_instances.remove(m)
            assert a.placement is not None and a.profile is not None
            return MigDestroy(a.host_id, a.device_uuid, a.profile, a.placement[0], a.placement[1], m.uuid)
        m.claimed_by = None
    return None


def _find_slot(d: Any, a: Allocation) -> MigSlot | None:
    assert a.placement is not None
    for m in d.mig_instances:
        if (m.start, m.size, m.profile) == (a.placement[0], a.placement[1], a.profile):
            return m  # type: ignore[no-any-return]
    return None
