"""From store rows to the placement engine's model, with the claims the store holds applied."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.backends.contract import SLICE_KINDS, Capabilities
from controller.placement import Allocation, Host, MigSlot, VgpuOffer
from controller.placement import Device as PlacementDevice
from controller.store.models import Device
from controller.store.models import Host as HostRow

_REGION_LABELS = ("region", "topology.kubernetes.io/region", "gpufabric.dev/region")
_AZ_LABELS = ("az", "zone", "topology.kubernetes.io/zone", "gpufabric.dev/az")
_GROUP_LABELS = ("placement-group", "gpufabric.dev/placement-group", "rack")
AGGREGATE_LABEL = "gpufabric.dev/aggregate"  # an OpenStack host aggregate / Ironic conductor group
# The instance topology's network nodes, layer 1 (top) to 3 (directly above the host): the labels EKS puts on
# nodes, or gpufabric's own for hosts of other backends (an OpenStack aggregate, a static host's rack switch).
_NETWORK_LABELS = tuple(
    (f"topology.k8s.aws/network-node-layer-{n}", f"gpufabric.dev/network-node-layer-{n}") for n in (1, 2, 3)
)


@cache
def short_model(nvml_name: str) -> str:
    """The catalog's short model name ("H100-80GB") for an NVML name; the name itself if unknown."""
    from drivers.gpus.catalog import load_catalog

    try:
        return load_catalog().product(nvml_name).model
    except KeyError:
        return nvml_name


@cache
def _mig_profiles_of_vgpu_types() -> dict[str, str]:
    """vGPU type name -> the MIG profile it occupies, for the catalog's MIG-backed types (A100-3-20C: 3g.20gb)."""
    from drivers.gpus.catalog import load_catalog

    return {t.name: t.mig_profile for b in load_catalog().boards() for t in b.vgpu_types if t.mig_profile}


def vgpu_offers(vgpu: dict[str, Any], mig_enabled: bool) -> dict[str, VgpuOffer]:
    """The vGPU types a GPU offers now: MIG-backed ones when it is in MIG mode, time-sliced ones when not (what
    NVIDIA's vGPU manager creates on each), whatever else the report lists."""
    profiles = _mig_profiles_of_vgpu_types()
    offers: dict[str, VgpuOffer] = {}
    for t in vgpu.get("supported") or []:
        name = t["name"].removeprefix("NVIDIA ").strip()
        profile = t.get("mig_profile") or profiles.get(name)
        if (profile is not None) == mig_enabled:
            offers[name] = VgpuOffer(t["framebuffer_mib"], t["max_instances"], profile)
    return offers


def _label(labels: dict[str, Any], keys: Iterable[str]) -> str | None:
    for k in keys:
        v = labels.get(k)
        if v:
            return str(v)
    return None


USABLE_UNTIL_LABEL = "gpufabric.dev/usable-until"  # ISO 8601: the capacity under the host ends then


def _until(value: Any) -> datetime | None:
    """The label's time (UTC when it names no zone); unreadable: no end, as if unset."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def host_state(row: HostRow) -> str:
    if row.admin_state in ("drained", "quarantined"):
        return row.admin_state
    return "ready" if row.status == "ready" else "unreachable"


def to_placement_host(row: HostRow, capabilities: Callable[[str], Capabilities | None]) -> Host:
    """The host as placement sees it; ``capabilities``: the declared capabilities of a backend kind (None: a kind
    this controller does not serve, whose hosts are given nothing)."""
    labels = dict(row.labels or {})
    backend_config = row.backend.config if row.backend is not None else {}
    kind = row.backend.kind if row.backend is not None else "static"
    policy = row.pool.policy if row.pool is not None else {}
    host = Host(
        id=row.hostname,
        backend_id=row.backend.name if row.backend is not None else "static",
        backend_kind=kind,
        region=_label(labels, _REGION_LABELS) or str(backend_config.get("region") or "default"),
        az=_label(labels, _AZ_LABELS) or str(backend_config.get("zone") or "default"),
        placement_group=_label(labels, _GROUP_LABELS),
        aggregate=_label(labels, (AGGREGATE_LABEL,)),
        network_nodes=tuple(_label(labels, keys) for keys in _NETWORK_LABELS),
        usable_until=_until(labels.get(USABLE_UNTIL_LABEL)),
        pool=row.pool.name if row.pool is not None else None,
        state=host_state(row),  # type: ignore[arg-type]
        validation=labels.get("gpufabric.dev/validation", "unvalidated"),  # type: ignore[arg-type]
        labels={str(k): str(v) for k, v in labels.items()},
        cost=float(labels.get("gpufabric.dev/cost", 1.0)),
        on_demand_mig=bool(policy.get("on_demand_mig")),
    )
    caps = capabilities(host.backend_kind)
    if caps is None:
        host.slice_kinds = frozenset()
        host.why_not = f"this controller does not serve backend kind {kind} (setting backend_kinds)"
    else:
        host.slice_kinds = caps.slice_kinds if caps.slice_kinds != SLICE_KINDS else None
        host.whole_node, host.one_kind, host.why_not = caps.whole_node, caps.one_kind_per_host, caps.why_not
    host.devices = [to_placement_device(d) for d in row.devices]
    return host


def to_placement_device(row: Device) -> PlacementDevice:
    health = row.health if row.health in ("healthy", "degraded", "unhealthy", "quarantined") else "unknown"
    device = PlacementDevice(
        uuid=row.uuid,
        index=row.index,
        model=short_model(row.model),
        memory_mib=row.memory_mib,
        health=health,  # type: ignore[arg-type]
        admin_state=row.admin_state,  # type: ignore[arg-type]
    )
    vgpu = (row.details or {}).get("vgpu") or {}
    own = [s for s in (row.slices or []) if s.get("parent_uuid") == row.uuid]
    share_kinds = {s["kind"] for s in own if s.get("kind") in ("timeslice", "mps")}
    # A vGPU GPU in MIG mode (the agent's report) or configured with a MIG-backed type (Nova, whose Placement
    # lists the type's GPU instances in the offer): MIG-backed vGPUs on its GPU instances.
    backed = vgpu_offers(vgpu, True) if vgpu.get("supported") else {}
    if backed and (row.mig_mode == "enabled" or vgpu.get("gpu_instances")):
        device.mode = "vgpu"
        device.vgpu_types = backed
        if row.mig_mode == "enabled":
            device.mig_instances = [
                MigSlot(m.profile, m.placement_start, m.placement_size, m.uuid) for m in row.mig_instances
            ]
        else:
            device.mig_instances = [
                MigSlot(g["profile"], int(g["start"]), int(g["size"]), g.get("uuid")) for g in vgpu["gpu_instances"]
            ]
    elif row.mig_mode == "enabled":
        device.mode = "mig"
        device.mig_instances = [
            MigSlot(m.profile, m.placement_start, m.placement_size, m.uuid) for m in row.mig_instances
        ]
    elif share_kinds:
        kind = "mps" if "mps" in share_kinds else "timeslice"
        device.mode = kind  # type: ignore[assignment]
        device.replicas = sum(int(s.get("count", 0)) for s in own if s.get("kind") == kind)
    elif vgpu.get("supported"):
        device.mode = "vgpu"
        device.vgpu_types = vgpu_offers(vgpu, False)
    return device


def apply_claim(host: Host, claim_id: str, allocations: Iterable[Allocation]) -> None:
    """Mark what a live claim holds on ``host`` (a host freshly built from the store)."""
    for a in allocations:
        if a.host_id != host.id:
            continue
        d = host.device(a.device_uuid)
        if d is None:
            continue
        if a.kind == "gpu":
            d.claimed_by = claim_id
        elif a.kind in ("timeslice", "mps"):
            d.share_claims[claim_id] = d.share_claims.get(claim_id, 0) + a.units
        elif a.kind == "vgpu" and a.placement is not None:
            # MIG-backed: the GPU instance it runs on (by MIG UUID, else by placement).
            slot = next((m for m in d.mig_instances if a.mig_uuid and m.uuid == a.mig_uuid), None) or next(
                (m for m in d.mig_instances if (m.start, m.size, m.profile) == (*a.placement, a.profile)), None
            )
            if slot is not None:
                slot.claimed_by, slot.vgpu_type = claim_id, a.vgpu_type
        elif a.kind == "vgpu":
            _, n = d.vgpu_claims.get(claim_id, (a.vgpu_type or "", 0))
            d.vgpu_claims[claim_id] = (a.vgpu_type or "", n + a.units)
        elif a.placement is not None and a.profile is not None:
            slot = next((m for m in d.mig_instances if a.mig_uuid and m.uuid == a.mig_uuid), None)
            if slot is None:
                slot = next(
                    (m for m in d.mig_instances if (m.start, m.size, m.profile) == (*a.placement, a.profile)), None
                )
            if slot is not None:
                slot.claimed_by = claim_id
                slot.ephemeral = a.create
            elif a.create:
                d.mig_instances.append(
                    MigSlot(a.profile, a.placement[0], a.placement[1], None, claim_id, pending=True, ephemeral=True)
                )


def allocation_to_dict(a: Allocation) -> dict[str, Any]:
    return {
        "host": a.host_id,
        "device": a.device_uuid,
        "kind": a.kind,
        "model": a.model,
        "units": a.units,
        "slice_index": a.slice_index,
        "profile": a.profile,
        "placement": {"start": a.placement[0], "size": a.placement[1]} if a.placement else None,
        "mig_uuid": a.mig_uuid,
        "create": a.create,
        "vgpu_type": a.vgpu_type,
    }


def allocation_from_dict(d: dict[str, Any]) -> Allocation:
    p = d.get("placement")
    return Allocation(
        host_id=d["host"],
        device_uuid=d["device"],
        kind=d["kind"],
        model=d["model"],
        units=int(d.get("units", 1)),
        slice_index=int(d.get("slice_index", 0)),
        profile=d.get("profile"),
        placement=(int(p["start"]), int(p["size"])) if p else None,
        mig_uuid=d.get("mig_uuid"),
        create=bool(d.get("create")),
        vgpu_type=d.get("vgpu_type"),
    )


def stored_models_matching(session: Session, want: str) -> list[str]:
    """The stored (NVML) GPU model names a request's ``model`` names: the NVML name itself, the catalog's short
    name ("H100-80GB") or its family ("H100"), as the lease API reads them. There are few distinct models, so
    this reads them all and the caller filters in SQL with ``IN``."""
    from controller.placement.filters import model_matches

    return [
        n for n in session.scalars(select(Device.model).distinct()) if n == want or model_matches(want, short_model(n))
    ]
