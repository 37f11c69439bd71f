"""Filters: which hosts and devices can serve a request, and why the others cannot.

The same predicates serve the fast path (checked on each lazily drawn candidate) and the refusal path
(``controller.placement.funnel.explain``: a funnel that counts, per filter, the hosts and devices it removed,
and finds the nearest fit). Filters run in a fixed order and a candidate is counted against the first filter
it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controller.placement import mig
from controller.placement.index import Index
from controller.placement.model import KIND_MODE, Device, Host, OfferKey
from controller.placement.request import PlacementRequest, SliceRequest

# NVML reports usable memory, which is below the marketed size (an H100 80GB reports 81,559 MiB = 79.6 GiB,
# a MIG 1g.5gb 4,864 MiB = 4.75 GiB), so a memory floor is matched within this tolerance.
MEMORY_TOLERANCE = 0.06

# Called with (tenant, slice kind, GPU model, units asked); returns None if allowed, else the name of the
# quota that would be exceeded (e.g. "gpu:H100-80GB"). The store layer supplies it from its quota table.
QuotaCheck = Callable[[str, str, str, int], str | None]

HOST_FILTERS = ("host-state", "backend", "capability", "region", "az", "validation", "capacity-window")
DEVICE_FILTERS = ("slice-kind", "model", "memory", "profile", "health", "device-admin", "quota", "capacity")
GROUP_FILTERS = ("fit", "topology")
ALL_FILTERS = HOST_FILTERS + DEVICE_FILTERS + GROUP_FILTERS


def model_matches(want: str | None, model: str) -> bool:
    """Exact short name or family prefix, case-insensitive: "H100" matches "H100-80GB" and "H100-PCIE"."""
    if want is None:
        return True
    w, m = want.lower(), model.lower()
    return m == w or m.startswith(w + "-")


def memory_ok(have_mib: int, want_mib: int) -> bool:
    return want_mib <= 0 or have_mib >= want_mib * (1 - MEMORY_TOLERANCE)


@dataclass(slots=True)
class Demand:
    """One slice entry of the request, resolved against what the fleet has."""

    slice: SliceRequest
    index: int
    keys: list[OfferKey] = field(default_factory=list)
    # Acceptable MIG profiles / vGPU types per model, best (smallest) first.
    variants: dict[str, list[str]] = field(default_factory=dict)
    quota_blocked: dict[str, str] = field(default_factory=dict)  # model -> quota name

    @property
    def kind(self) -> str:
        return self.slice.kind

    @property
    def count(self) -> int:
        return self.slice.count

    def min_units(self) -> int:
        """Free units a host needs in one bucket to be worth drawing (MIG mixes existing and on-demand)."""
        return self.count if len(self.keys) == 1 else 1


def resolve(
    req: PlacementRequest, index: Index, tenant: str, quota: QuotaCheck | None, nodes: int | None = None
) -> list[Demand]:
    """Turn slice entries into demands over the index's offer keys (model, memory, profile and quota applied)."""
    demands: list[Demand] = []
    for i, s in enumerate(req.slices):
        d = Demand(s, i)
        wanted = s.min_memory_mib
        kinds = ("mig", "mig+") if s.kind == "mig" else (s.kind,)
        for kind in kinds:
            for key in index.keys(kind):
                _, model, variant = key
                if not model_matches(s.model, model):
                    continue
                if s.kind == "mig":
                    geom = mig.geometry(model)
                    p = geom.profile(variant) if geom else None
                    if p is None or (s.profile is not None and p.name != s.profile):
                        continue
                    if s.profile is None and p.is_variant:
                        continue
                    if not memory_ok(p.memory_mib, wanted):
                        continue
                elif s.kind == "vgpu":
                    if s.vgpu_type is not None and variant != s.vgpu_type:
                        continue
                    if not memory_ok(index.vgpu_memory.get((model, variant), 0), wanted):
                        continue
                elif not memory_ok(index.model_memory.get(model, 0), wanted):
                    continue
                if quota is not None and model not in d.quota_blocked:
                    name = quota(tenant, s.kind, model, s.count * (nodes or req.nodes))
                    if name is not None:
                        d.quota_blocked[model] = name
                if model in d.quota_blocked:
                    continue
                d.keys.append(key)
                if variant:
                    d.variants.setdefault(model, [])
                    if variant not in d.variants[model]:
                        d.variants[model].append(variant)
        for model, variants in d.variants.items():
            variants.sort(key=lambda v, m=model: _variant_memory(index, s.kind, m, v))  # type: ignore[misc]
        # Existing MIG instances before on-demand creation; otherwise a stable order.
        d.keys.sort(key=lambda k: (k[0] == "mig+", k[1], _variant_memory(index, s.kind, k[1], k[2])))
        demands.append(d)
    return demands


def _variant_memory(index: Index, kind: str, model: str, variant: str) -> tuple[int, int]:
    """Order of preference among acceptable variants: least memory, then fewest compute slices."""
    if kind == "mig":
        geom = mig.geometry(model)
        p = geom.profile(variant) if geom else None
        return (p.memory_mib, p.slices) if p else (0, 0)
    if kind == "vgpu":
        return index.vgpu_memory.get((model, variant), 0), 0
    return 0, 0


# --- host filters ----------------------------------------------------------------------------------------


def host_failures(host: Host, req: PlacementRequest) -> list[tuple[str, str]]:
    """Every host-level filter this host fails, in filter order, with a reason."""
    out: list[tuple[str, str]] = []
    if host.state != "ready":
        out.append(("host-state", f"host is {host.state}"))
    if req.backends is not None and host.backend_id not in req.backends and host.backend_kind not in req.backends:
        out.append(("backend", f"backend {host.backend_id} ({host.backend_kind}) not in {req.backends}"))
    why = capability_reason(host, req)
    if why is not None:
        out.append(("capability", why))
    if req.regions is not None and host.region not in req.regions:
        out.append(("region", f"region {host.region} not in {req.regions}"))
    if req.azs is not None and host.az not in req.azs:
        out.append(("az", f"az {host.az} not in {req.azs}"))
    if req.require_validated and host.validation != "validated":
        out.append(("validation", f"host is {host.validation}, not validated"))
    if host.usable_until is not None:
        why = window_reason(host.usable_until, req)
        if why is not None:
            out.append(("capacity-window", why))
    return out


def window_reason(until: datetime, req: PlacementRequest, now: datetime | None = None) -> str | None:
    """Why a lease of the request's duration cannot run on capacity that ends at ``until`` (None: it can)."""
    now = now or datetime.now(UTC)
    end = f"{until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if req.duration is None:
        return f"its capacity (a capacity block) ends {end}: a lease here needs a duration that ends before then"
    if now + req.duration > until:
        hours = max(0.0, (until - now).total_seconds() / 3600)
        return (
            f"its capacity (a capacity block) ends {end}: a lease of {req.duration.total_seconds() / 3600:.1f} h "
            f"would end after it ({hours:.1f} h left)"
        )
    return None


def host_passes(host: Host, req: PlacementRequest) -> bool:
    """Fast-path version of ``host_failures`` (no strings)."""
    if host.state != "ready":
        return False
    if req.backends is not None and host.backend_id not in req.backends and host.backend_kind not in req.backends:
        return False
    if (host.slice_kinds is not None or host.whole_node or host.one_kind) and capability_reason(host, req) is not None:
        return False
    if req.regions is not None and host.region not in req.regions:
        return False
    if req.azs is not None and host.az not in req.azs:
        return False
    if req.require_validated and host.validation != "validated":
        return False
    return host.usable_until is None or window_reason(host.usable_until, req) is None


def capability_reason(host: Host, req: PlacementRequest) -> str | None:
    """Why the host's backend kind cannot hand out what each node of the request asks for (None: it can)."""
    kinds = [s.kind for s in req.slices]
    if host.slice_kinds is not None:
        missing = sorted(set(kinds) - host.slice_kinds)
        if missing:
            note = f": {host.why_not}" if host.why_not else ""
            return f"{host.backend_kind} hosts offer no {', '.join(missing)} slices{note}"
    if host.one_kind and len(set(kinds)) > 1:
        return f"{host.backend_kind} hosts give one kind of slice per lease, not {' + '.join(sorted(set(kinds)))}"
    if host.whole_node:
        asked = sum(s.count for s in req.slices if s.kind == "gpu")
        if asked != len(host.devices):
            return f"{host.backend_kind} nodes are leased whole: {asked} of {len(host.devices)} GPUs asked"
    return None


# --- device filters --------------------------------------------------------------------------------------


def device_stage(
    host: Host, d: Device, demand: Demand, cache: dict[tuple[object, ...], tuple[int, str]] | None = None
) -> tuple[int, str]:
    """How far a device gets through DEVICE_FILTERS for one demand: (index of first failure, reason).

    Returns ``(len(DEVICE_FILTERS), "")`` when it has free capacity for the demand. ``cache`` memoises the
    capacity-independent part by device signature (the refusal path evaluates 800,000 GPUs with it).
    """
    if cache is None:
        stage, reason = _static_stage(host, d, demand)
    else:
        inst = (
            tuple(sorted({m.profile for m in d.mig_instances})) if d.mode == "mig" and not host.on_demand_mig else None
        )
        if d.mode == "vgpu":  # a MIG-backed and a time-sliced GPU of one model offer different types
            inst = tuple(sorted(d.vgpu_types))
        key = (demand.index, d.mode, d.model, d.memory_mib, d.health, d.admin_state, host.on_demand_mig, inst)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = _static_stage(host, d, demand)
        stage, reason = hit
    if stage < 7:
        return stage, reason
    if device_free_units(host, d, demand) <= 0:
        if demand.slice.kind == "vgpu" and demand.slice.vgpu_type:
            return 7, d.vgpu_refusal(demand.slice.vgpu_type)
        return 7, f"no free {demand.slice.kind} capacity"
    return len(DEVICE_FILTERS), ""


def kind_model_stage(mode: str, model: str, demand: Demand) -> tuple[int, str] | None:
    """The slice-kind and model filters, which depend only on the GPU's mode and model."""
    s = demand.slice
    if mode != KIND_MODE[s.kind]:
        return 0, f"in {mode} mode, not {KIND_MODE[s.kind]}"
    if not model_matches(s.model, model):
        return 1, f"{model}, not {s.model}"
    return None


def _static_stage(host: Host, d: Device, demand: Demand) -> tuple[int, str]:
    s = demand.slice
    early = kind_model_stage(d.mode, d.model, demand)
    if early is not None:
        return early
    want = s.min_memory_mib
    if s.kind == "mig":
        geom = mig.geometry(d.model)
        if geom is None:
            return 0, f"{d.model} is not MIG-capable"
        profiles = [
            p
            for p in geom.profiles.values()
            if (p.name == s.profile if s.profile else not p.is_variant) and memory_ok(p.memory_mib, want)
        ]
        if not profiles:
            if s.profile and geom.profile(s.profile) is None:
                return 3, f"{d.model} has no MIG profile {s.profile}"
            return 2, f"no MIG profile on {d.model} with {s.min_memory_gib} GiB"
        names = {p.name for p in profiles}
        if not host.on_demand_mig and not any(m.profile in names for m in d.mig_instances):
            return 3, f"no {'/'.join(sorted(names))} instance and the pool does not allow on-demand MIG"
    elif s.kind == "vgpu":
        types = [
            t
            for t, v in d.vgpu_types.items()
            if (s.vgpu_type is None or t == s.vgpu_type) and memory_ok(v.framebuffer_mib, want)
        ]
        if not types:
            if s.vgpu_type and s.vgpu_type not in d.vgpu_types:
                return 3, d.vgpu_refusal(s.vgpu_type)
            return 2, f"no vGPU type with {s.min_memory_gib} GiB"
    elif not memory_ok(d.memory_mib, want):
        return 2, f"{d.memory_mib / 1024:.1f} GiB, wants {s.min_memory_gib}"
    if d.health != "healthy":
        return 4, f"health is {d.health}"
    if d.admin_state != "active":
        return 5, f"GPU is {d.admin_state}"
    if d.model in demand.quota_blocked:
        return 6, f"quota {demand.quota_blocked[d.model]} exceeded"
    return 7, ""


def device_free_units(host: Host, d: Device, demand: Demand) -> int:
    s = demand.slice
    if s.kind == "gpu":
        return 1 if d.claimed_by is None else 0
    if s.kind in ("timeslice", "mps"):
        return max(0, d.share_free())
    variants = demand.variants.get(d.model, [])
    if s.kind == "vgpu":
        return d.vgpu_free_of(variants)
    n = sum(1 for m in d.mig_instances if m.claimed_by is None and not m.pending and m.profile in variants)
    if host.on_demand_mig:
        layout = d.mig_layout()
        n += max((mig.creatable(d.model, layout, p) for p in variants), default=0)
    return n
