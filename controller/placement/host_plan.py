"""Planning one host: which devices (and which MIG placements) would serve every demand of a request there.

``plan_host`` is what the engine's search calls for each candidate host and the funnel's ``fit`` filter asks;
it never changes the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.placement import mig
from controller.placement.decision import Allocation, HostPlan
from controller.placement.filters import Demand, memory_ok, model_matches
from controller.placement.model import KIND_MODE, Host, MigSlot, OfferKey


def plan_host(
    host: Host,
    demands: list[Demand],
    policy: str,
    offers: dict[str, dict[OfferKey, int]],
    hosts_offering: Callable[[OfferKey], int] | None = None,
) -> HostPlan | None:
    """Pick devices on one host for every demand (or None). Devices taken by one demand are not reused.

    ``hosts_offering(key)`` counts the fleet's hosts with free units of an offer key (the engine's index); the MIG
    scorer reads it to tell a profile's last place on this host from its last place in the fleet.
    """
    taken_whole: set[str] = set()
    share_used: dict[str, int] = {}
    vgpu_used: dict[str, tuple[str, int]] = {}
    mig_taken: set[tuple[str, int]] = set()
    mig_vgpus: dict[tuple[str, str], int] = {}
    layouts: dict[str, mig.Layout] = {}
    allocs: list[Allocation] = []
    mig_loss = 0
    spread = policy == "spread"
    elsewhere = _elsewhere(host, offers, hosts_offering)
    for dm in demands:
        s = dm.slice
        mode = KIND_MODE[s.kind]
        devices = [d for d in host.devices if d.mode == mode and d.usable and model_matches(s.model, d.model)]
        devices = [d for d in devices if d.model not in dm.quota_blocked]
        need = s.count
        if s.kind == "gpu":
            free = [
                d
                for d in devices
                if d.claimed_by is None and d.uuid not in taken_whole and _memory_fits(d.memory_mib, s)
            ]
            if len(free) < need:
                return None
            for d in free[:need]:
                taken_whole.add(d.uuid)
                allocs.append(Allocation(host.id, d.uuid, "gpu", d.model, 1, dm.index))
        elif s.kind in ("timeslice", "mps"):
            frees = [(d.share_free() - share_used.get(d.uuid, 0), d) for d in devices if _memory_fits(d.memory_mib, s)]
            frees = [(f, d) for f, d in frees if f > 0]
            if sum(f for f, _ in frees) < need:
                return None
            # One GPU that holds all replicas if there is one (best fit for pack, most free for spread).
            single = [(f, d) for f, d in frees if f >= need]
            order = (
                sorted(single, key=lambda x: (-x[0] if spread else x[0], x[1].index))
                if single
                else sorted(frees, key=lambda x: (-x[0], x[1].index))
            )
            for f, d in order:
                n = min(f, need)
                share_used[d.uuid] = share_used.get(d.uuid, 0) + n
                allocs.append(Allocation(host.id, d.uuid, s.kind, d.model, n, dm.index))  # type: ignore[arg-type]
                need -= n
                if need == 0:
                    break
        elif s.kind == "vgpu":
            for d in devices:
                if need == 0:
                    break
                if d.mig_backed_vgpu:
                    while need:
                        a = pick_mig_backed_vgpu(host, d, dm, mig_taken, mig_vgpus)
                        if a is None:
                            break
                        allocs.append(a)
                        need -= 1
                    continue
                for t in dm.variants.get(d.model, []):
                    cur = vgpu_used.get(d.uuid)
                    if cur is not None and cur[0] != t:
                        continue
                    f = d.vgpu_free(t) - (cur[1] if cur else 0)
                    if f <= 0:
                        continue
                    n = min(f, need)
                    vgpu_used[d.uuid] = (t, (cur[1] if cur else 0) + n)
                    allocs.append(Allocation(host.id, d.uuid, "vgpu", d.model, n, dm.index, vgpu_type=t))
                    need -= n
                    break
            if need:
                return None
        else:
            for _ in range(need):
                a, loss = pick_mig(host, devices, dm, mig_taken, layouts, elsewhere)
                if a is None:
                    return None
                allocs.append(a)
                mig_loss += loss
    used = sum(a.units for a in allocs)
    host_offers = offers.get(host.id, {})
    capacity = sum(host_offers.get(k, 0) for dm in demands for k in dm.keys)
    return HostPlan(host, allocs, max(0, capacity - used), max(capacity, used), mig_loss)


def pick_mig_backed_vgpu(
    host: Host, d: Any, dm: Demand, mig_taken: set[tuple[str, int]], planned: dict[tuple[str, str], int]
) -> Allocation | None:
    """One MIG-backed vGPU on a free GPU instance of its type's profile (smallest acceptable type first): the
    geometry a MIG slice takes. The allocation names the instance's placement, which the store claims.
    ``planned`` counts the vGPUs of each (GPU, type) this plan already took."""
    for t in dm.variants.get(d.model, []):
        offer = d.vgpu_types.get(t)
        if offer is None or offer.mig_profile is None or d.vgpu_free(t) - planned.get((d.uuid, t), 0) <= 0:
            continue
        for m in sorted(d.mig_instances, key=lambda m: m.start):
            if m.profile != offer.mig_profile or m.claimed_by is not None or m.pending:
                continue
            if (d.uuid, m.start) in mig_taken:
                continue
            mig_taken.add((d.uuid, m.start))
            planned[(d.uuid, t)] = planned.get((d.uuid, t), 0) + 1
            return Allocation(
                host.id, d.uuid, "vgpu", d.model, 1, dm.index, m.profile, (m.start, m.size), m.uuid, vgpu_type=t
            )
    return None


def _elsewhere(
    host: Host, offers: dict[str, dict[OfferKey, int]], hosts_offering: Callable[[OfferKey], int] | None
) -> Callable[[str, str], bool]:
    """``(model, profile) -> bool``: can a host other than this one still create the profile?"""
    if hosts_offering is None:
        return lambda model, profile: False
    here = offers.get(host.id, {})
    count = hosts_offering

    def elsewhere(model: str, profile: str) -> bool:
        key = ("mig+", model, profile)
        return count(key) - (1 if here.get(key) else 0) > 0

    return elsewhere


def pick_mig(
    host: Host,
    devices: list[Any],
    dm: Demand,
    mig_taken: set[tuple[str, int]],
    layouts: dict[str, mig.Layout],
    elsewhere: Callable[[str, str], bool] = lambda model, profile: False,
) -> tuple[Allocation | None, int]:
    # 1. A free existing instance of an acceptable profile (smallest acceptable profile first).
    best_existing: tuple[int, int, int, Any, MigSlot] | None = None
    for d in devices:
        variants = dm.variants.get(d.model, [])
        for m in d.mig_instances:
            if m.claimed_by is None and not m.pending and m.profile in variants and (d.uuid, m.start) not in mig_taken:
                busy = sum(1 for x in d.mig_instances if x.claimed_by is not None)
                ex = (variants.index(m.profile), -busy, d.index, d, m)
                if best_existing is None or ex[:3] < best_existing[:3]:
                    best_existing = ex
    if best_existing is not None:
        d, m = best_existing[3], best_existing[4]
        mig_taken.add((d.uuid, m.start))
        return (
            Allocation(host.id, d.uuid, "mig", d.model, 1, dm.index, m.profile, (m.start, m.size), m.uuid),
            0,
        )
    if not host.on_demand_mig:
        return None, 0
    # 2. Create one where it costs the host's future least (``mig.host_cost``).
    for d in devices:
        if d.uuid not in layouts:
            layouts[d.uuid] = d.mig_layout()
    places = mig.HostPlaces([(d.model, layouts[d.uuid]) for d in devices], elsewhere)
    best: tuple[int, int, int, int, Any, str, int] | None = None
    for d in devices:
        layout = layouts[d.uuid]
        # A profile still creatable on another GPU of the host, or on another host, has not lost its last place.
        outside = places.outside(d.model, layout)
        for rank, p in enumerate(dm.variants.get(d.model, [])):
            bp = mig.best_placement(d.model, layout, p, outside)
            if bp is None:
                continue
            loss, start, size = bp
            cand = (rank, loss, d.index, start, d, p, size)
            if best is None or cand[:4] < best[:4]:
                best = cand
    if best is None:
        return None, 0
    _, loss, _, start, d, p, size = best
    layouts[d.uuid] = mig.add(layouts[d.uuid], start, size, p)
    return Allocation(host.id, d.uuid, "mig", d.model, 1, dm.index, p, (start, size), None, True), loss


def _memory_fits(memory_mib: int, s: Any) -> bool:
    return memory_ok(memory_mib, s.min_memory_mib)
