"""The inventory a node agent reports: the wire contract shared by agent and controller.

Versioned by ``INVENTORY_SCHEMA``. A breaking change bumps the version; additive fields with
defaults do not. The controller refuses schema versions it does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

INVENTORY_SCHEMA: Literal["gpufabric.inventory/v1"] = "gpufabric.inventory/v1"

HealthState = Literal["healthy", "degraded", "unhealthy", "quarantined"]
# pending-reset: the requested mode (``MigState.pending``) differs from the current one until a GPU reset.
MigModeState = Literal["unsupported", "disabled", "enabled", "pending-reset"]
ComputeMode = Literal["default", "exclusive-thread", "prohibited", "exclusive-process", "unknown"]
SliceKind = Literal["gpu", "mig", "timeslice", "mps", "vgpu"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class PciInfo(_Model):
    bus_id: str = Field(description="Domain:bus:device.function, e.g. 00000000:17:00.0")
    device_id: str = Field(description="nvmlPciInfo_t.pciDeviceId as hex, e.g. 0x20B010DE")
    subsystem_id: str | None = None


class Placement(_Model):
    start: int
    size: int


class ProcessInfo(_Model):
    pid: int
    used_memory_mib: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class ComputeInstance(_Model):
    id: int
    profile_id: int
    slices: int
    placement: Placement


class MigInstance(_Model):
    """One GPU instance (GI) and its compute instances, with the MIG device UUID tenants use."""

    gpu_instance_id: int
    profile: str = Field(description="Profile name as nvidia-smi prints it without 'MIG ', e.g. 3g.20gb")
    profile_id: int
    placement: Placement
    memory_mib: int
    sm_count: int
    uuid: str | None = Field(default=None, description="MIG-... UUID of its (first) MIG device")
    compute_instances: list[ComputeInstance] = Field(default_factory=list)
    processes: list[ProcessInfo] = Field(default_factory=list)


class MigState(_Model):
    capable: bool
    current: bool | None = None
    pending: bool | None = None
    state: MigModeState = "unsupported"


class EccCounters(_Model):
    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None


class RemappedRows(_Model):
    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


class HealthReason(_Model):
    code: str = Field(description="Stable machine code, e.g. xid-79, ecc-dbe, remap-failure")
    message: str
    severity: HealthState
    since: datetime


class GpuHealth(_Model):
    state: HealthState = "healthy"
    reasons: list[HealthReason] = Field(default_factory=list)
    ecc: EccCounters = Field(default_factory=EccCounters)
    retired_pages_pending: bool | None = None
    retired_pages: int | None = None
    remapped_rows: RemappedRows | None = None


class NvLinkInfo(_Model):
    links_active: int = 0
    version: str | None = Field(default=None, description="NVLink generation, e.g. 4.0 on H100")
    peers: list[str] = Field(default_factory=list, description="PCI bus ids of NVLink peers")


class VgpuType(_Model):
    id: int
    name: str
    type_class: str
    framebuffer_mib: int
    max_instances: int


class VgpuInfo(_Model):
    supported: list[VgpuType] = Field(default_factory=list)
    creatable: list[int] = Field(default_factory=list)


class SliceOffer(_Model):
    """What tenants can be given from this GPU, as the placement engine counts it."""

    kind: SliceKind
    count: int
    memory_mib: int | None = None
    profile: str | None = None
    parent_uuid: str = Field(description="GPU or MIG UUID the offer comes from")


class Gpu(_Model):
    index: int
    uuid: str
    minor_number: int | None = Field(default=None, description="The driver's minor number: /dev/nvidia<minor>")
    name: str
    serial: str | None = None
    pci: PciInfo
    architecture: str
    compute_capability: str = Field(description="major.minor, e.g. 9.0")
    memory_total_mib: int
    memory_used_mib: int | None = None
    mig: MigState
    mig_instances: list[MigInstance] = Field(default_factory=list)
    compute_mode: ComputeMode = "default"
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    utilization_gpu_pct: int | None = None
    processes: list[ProcessInfo] = Field(default_factory=list)
    nvlink: NvLinkInfo = Field(default_factory=NvLinkInfo)
    vgpu: VgpuInfo | None = None
    health: GpuHealth = Field(default_factory=GpuHealth)
    slices: list[SliceOffer] = Field(default_factory=list)


class HostIdentity(_Model):
    hostname: str
    agent_version: str
    simulated: bool = False


class Topology(_Model):
    """Pairwise GPU connectivity like `nvidia-smi topo -m`: X, NV<n>, PIX, PXB, PHB, NODE, SYS."""

    matrix: list[list[str]] = Field(default_factory=list)


class HealthSummary(_Model):
    healthy: int = 0
    degraded: int = 0
    unhealthy: int = 0
    quarantined: int = 0


class DeviceGrant(_Model):
    """A lease's access on this host as the agent enforces it: its group may open exactly these device nodes."""

    lease: str
    unix_group: str
    gid: int
    device_nodes: list[str] = Field(description="Absolute paths of the device nodes the group may open")
    cuda_visible_devices: str


class DeviceAccess(_Model):
    """The agent enforces leases on this host's device nodes (``docs/security.md``); absent: it does not."""

    dev_root: str
    grants: list[DeviceGrant] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict, description="Lease id -> why its grant failed")


class Inventory(_Model):
    schema_version: Literal["gpufabric.inventory/v1"] = INVENTORY_SCHEMA
    host: HostIdentity
    driver_version: str
    cuda_driver_version: str
    nvml_version: str | None = None
    gpus: list[Gpu] = Field(default_factory=list)
    topology: Topology = Field(default_factory=Topology)
    health: HealthSummary = Field(default_factory=HealthSummary)
    device_access: DeviceAccess | None = None
    collected_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
