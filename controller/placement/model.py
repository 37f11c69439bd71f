"""The placement engine's in-memory model: hosts, devices and what is claimed on them.

Plain slotted dataclasses, not pydantic: the index holds 100,000 hosts and the hot path touches them per
decision. The store builds these from its rows (including which claims hold what), hands them to
``Engine.upsert_host`` and stays the source of truth; the engine never persists anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from controller.placement import mig

BackendKind = str  # the kinds are the backend registry's (controller.backends.registry)
HostState = Literal["ready", "drained", "quarantined", "unreachable"]
Validation = Literal["validated", "unvalidated", "failed"]
SliceKind = Literal["gpu", "mig", "timeslice", "mps", "vgpu"]
# How a GPU is configured decides what it can be given as: a whole GPU, MIG instances, shared replicas
# (time-slicing or MPS) or vGPUs. A GPU is in exactly one mode at a time.
DeviceMode = Literal["whole", "mig", "timeslice", "mps", "vgpu"]
DeviceHealth = Literal["healthy", "degraded", "unhealthy", "quarantined", "unknown"]
DeviceAdmin = Literal["active", "drained", "quarantined"]
# The mode a GPU must be in to give a slice of each kind.
KIND_MODE: dict[SliceKind, DeviceMode] = {
    "gpu": "whole",
    "mig": "mig",
    "timeslice": "timeslice",
    "mps": "mps",
    "vgpu": "vgpu",
}

# An offer key names one kind of free capacity: ("gpu", model, ""), ("mig", model, profile) for free existing
# instances, ("mig+", model, profile) for instances that could be created on demand, ("timeslice"|"mps",
# model, ""), ("vgpu", model, vgpu_type).
OfferKey = tuple[str, str, str]

_MIG_BACKED_NAME = re.compile(r"^[A-Za-z0-9]+-\d-\d+C(ME)?$")


@dataclass(slots=True)
class MigSlot:
    """One MIG GPU instance on a device, existing or (``pending``) created by a claim but not yet reported."""

    profile: str
    start: int
    size: int
    uuid: str | None = None
    claimed_by: str | None = None
    pending: bool = False
    # Created on demand for a claim: destroyed again when that claim is released.
    ephemeral: bool = False
    # The MIG-backed vGPU type a claim runs on this GPU instance (None: a MIG slice, or free).
    vgpu_type: str | None = None


@dataclass(slots=True)
class VgpuOffer:
    framebuffer_mib: int
    max_instances: int
    # MIG-backed type: the GPU-instance profile one vGPU of it occupies (A100-3-20C: 3g.20gb); None: time-sliced.
    mig_profile: str | None = None


@dataclass(slots=True)
class Device:
    uuid: str
    index: int
    model: str
    memory_mib: int
    health: DeviceHealth = "healthy"
    admin_state: DeviceAdmin = "active"
    mode: DeviceMode = "whole"
    mig_instances: list[MigSlot] = field(default_factory=list)
    replicas: int = 0  # timeslice / mps replicas offered by this GPU
    vgpu_types: dict[str, VgpuOffer] = field(default_factory=dict)
    # Allocation state (rebuilt by the store from its claims; updated by Engine.claim/release).
    claimed_by: str | None = None  # whole GPU
    share_claims: dict[str, int] = field(default_factory=dict)  # claim id -> replicas
    vgpu_claims: dict[str, tuple[str, int]] = field(default_factory=dict)  # claim id -> (type, instances)

    @property
    def usable(self) -> bool:
        return self.health == "healthy" and self.admin_state == "active"

    def mig_layout(self) -> mig.Layout:
        return tuple(sorted((m.start, m.size, m.profile) for m in self.mig_instances))

    def share_free(self) -> int:
        return self.replicas - sum(self.share_claims.values())

    @property
    def mig_backed_vgpu(self) -> bool:
        """A vGPU GPU in MIG mode: it offers MIG-backed types only, each vGPU on a GPU instance of its profile.

        NVIDIA's vGPU manager offers MIG-backed types on a GPU in MIG mode and time-sliced types on one that is
        not, so a GPU runs one kind or the other, never both."""
        return self.mode == "vgpu" and any(v.mig_profile is not None for v in self.vgpu_types.values())

    def vgpu_in_use(self) -> tuple[str | None, int]:
        """A time-sliced vGPU GPU runs one type at a time: the type in use (if any) and how many instances."""
        vtype: str | None = None
        used = 0
        for t, n in self.vgpu_claims.values():
            vtype = t
            used += n
        return vtype, used

    def vgpu_free(self, vtype: str) -> int:
        offer = self.vgpu_types.get(vtype)
        if offer is None:
            return 0
        if offer.mig_profile is not None:
            # One vGPU per free GPU instance of the type's profile, within the type's own maximum.
            free = sum(
                1
                for m in self.mig_instances
                if m.profile == offer.mig_profile and m.claimed_by is None and not m.pending
            )
            used = sum(1 for m in self.mig_instances if m.vgpu_type == vtype and m.claimed_by is not None)
            return max(0, min(free, offer.max_instances - used))
        # Time-sliced, equal-size mode (NVIDIA's default): every vGPU on the GPU has the same type.
        in_use, used = self.vgpu_in_use()
        if in_use is not None and in_use != vtype:
            return 0
        return offer.max_instances - used

    def vgpu_free_of(self, vtypes: list[str]) -> int:
        """vGPUs of any of ``vtypes`` this GPU can still take: time-sliced GPUs run one type (the best one),
        MIG-backed ones mix types (each type has its own GPU-instance profile, so their counts add up)."""
        if self.mig_backed_vgpu:
            return sum(self.vgpu_free(t) for t in vtypes)
        return max((self.vgpu_free(t) for t in vtypes), default=0)

    def vgpu_refusal(self, vtype: str) -> str:
        """Why this vGPU GPU cannot take one more ``vtype`` vGPU, naming the rule."""
        offer = self.vgpu_types.get(vtype)
        if offer is None:
            if self.mig_backed_vgpu:
                return f"in MIG mode (MIG-backed vGPU): a time-sliced {vtype} needs a GPU with MIG off"
            if is_mig_backed_type(vtype):
                # Independent of the claims: the filters cache this reason per kind of GPU.
                return f"runs time-sliced vGPU (MIG off): a MIG-backed {vtype} needs a GPU in MIG mode"
            return f"does not offer vGPU type {vtype}"
        if offer.mig_profile is not None:
            return f"no free {offer.mig_profile} GPU instance for MIG-backed {vtype}"
        running = self.vgpu_in_use()[0]
        if running is not None and running != vtype:
            return f"runs time-sliced {running}: {vtype} would mix vGPU sizes on one GPU (equal-size mode)"
        return f"all {offer.max_instances} {vtype} vGPUs taken"

    def is_idle(self) -> bool:
        return (
            self.claimed_by is None
            and not self.share_claims
            and not self.vgpu_claims
            and not any(m.claimed_by for m in self.mig_instances)
        )


NETWORK_TOPOLOGY = "same-network-node-layer-"


@dataclass(slots=True)
class Host:
    id: str
    backend_id: str
    backend_kind: BackendKind
    region: str
    az: str
    placement_group: str | None = None
    # The OpenStack host aggregate (Ironic: conductor group) the host is grouped by (label ``gpufabric.dev/aggregate``,
    # written by the OpenStack syncs: controller.backends.openstack.topology).
    aggregate: str | None = None
    # The network nodes above the host, layer 1 (top of the network) to layer 3 (directly above it); empty when
    # no instance topology is recorded (labels ``*/network-node-layer-N``, see controller.leases.fleet).
    network_nodes: tuple[str | None, ...] = ()
    # When the capacity under the host ends (an EC2 Capacity Block: its instances stop then); a lease on the host
    # must end before it (filter ``capacity-window``). None: no end (label ``gpufabric.dev/usable-until``).
    usable_until: datetime | None = None
    pool: str | None = None
    state: HostState = "ready"
    validation: Validation = "unvalidated"
    labels: dict[str, str] = field(default_factory=dict)
    cost: float = 1.0
    # The pool's policy allows creating MIG instances on demand on this host's MIG-enabled GPUs.
    on_demand_mig: bool = False
    devices: list[Device] = field(default_factory=list)
    # What the host's backend kind can hand out (controller.backends.contract.Capabilities): slice kinds (None: all),
    # leased whole, one slice kind per lease, and why the others are missing.
    slice_kinds: frozenset[str] | None = None
    whole_node: bool = False
    one_kind: bool = False
    why_not: str = ""

    def device(self, uuid: str) -> Device | None:
        for d in self.devices:
            if d.uuid == uuid:
                return d
        return None

    def domain(self, topology: str) -> str | None:
        """The value a gang's hosts must share for a topology constraint (None = no such domain recorded).

        A lease stays inside one backend, so every domain is qualified by the backend: ``any`` is the backend
        itself, an AZ is ``<backend>/<az>`` (two clusters' ``us-east-1a`` are different domains)."""
        if topology == "any":
            return self.backend_id
        if topology.startswith(NETWORK_TOPOLOGY):
            layer = int(topology[len(NETWORK_TOPOLOGY) :])
            value = self.network_nodes[layer - 1] if len(self.network_nodes) >= layer else None
        else:
            value = {
                "same-placement-group": self.placement_group,
                "same-aggregate": self.aggregate,
                "same-az": self.az,
                "same-region": self.region,
            }.get(topology)
        return f"{self.backend_id}/{value}" if value else None


def is_mig_backed_type(name: str) -> bool:
    """NVIDIA names MIG-backed types <board>-<compute slices>-<GB>C[ME] (A100-3-20C), time-sliced ones
    <board>-<GB>C (A100-20C)."""
    return _MIG_BACKED_NAME.match(name.removeprefix("NVIDIA ").strip()) is not None


def device_offers(host: Host, d: Device) -> dict[OfferKey, int]:
    """Free capacity of one device by offer key (empty if the device cannot be placed on)."""
    out: dict[OfferKey, int] = {}
    if not d.usable:
        return out
    if d.mode == "whole":
        if d.claimed_by is None:
            out[("gpu", d.model, "")] = 1
    elif d.mode == "mig":
        for m in d.mig_instances:
            if m.claimed_by is None and not m.pending:
                k = ("mig", d.model, m.profile)
                out[k] = out.get(k, 0) + 1
        if host.on_demand_mig:
            geom = mig.geometry(d.model)
            if geom is not None:
                layout = d.mig_layout()
                for p in geom.profiles:
                    n = mig.creatable(d.model, layout, p)
                    if n:
                        out[("mig+", d.model, p)] = n
    elif d.mode in ("timeslice", "mps"):
        free = d.share_free()
        if free > 0:
            out[(d.mode, d.model, "")] = free
    elif d.mode == "vgpu":
        for t in d.vgpu_types:
            free = d.vgpu_free(t)
            if free > 0:
                out[("vgpu", d.model, t)] = free
    return out


def host_offers(host: Host) -> dict[OfferKey, int]:
    """Free capacity of a host by offer key; a host that is not ``ready`` offers nothing."""
    out: dict[OfferKey, int] = {}
    if host.state != "ready":
        return out
    for d in host.devices:
        for k, n in device_offers(host, d).items():
            out[k] = out.get(k, 0) + n
    return out
