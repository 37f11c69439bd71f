"""What the MIG planner works on and produces: GPUs and GPU instances as observed through NVML, the profile
table, and the plan (operations and the resulting layout). Plain pydantic models, no NVML here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.mig.config import MigError
from drivers.contract.inventory import Placement


def span(p: Placement) -> str:
    return f"{p.start}:{p.size}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GiProfile(_Model):
    """A GPU-instance profile as NVML reports it for one GPU."""

    name: str = Field(description="e.g. 1g.5gb, 1g.5gb+me")
    profile_id: int = Field(description="nvmlGpuInstanceProfileInfo_t.id: what create/placement calls take")
    profile_index: int = Field(description="NVML_GPU_INSTANCE_PROFILE_* index used to look the profile up")
    slices: int = Field(description="compute slices (sliceCount)")
    memory_mib: int = 0
    max_instances: int
    placements: list[Placement]


class ObservedCi(_Model):
    id: int
    profile_id: int
    slices: int


class ObservedGi(_Model):
    gpu_instance_id: int
    profile: str
    profile_id: int
    placement: Placement
    compute_instances: list[ObservedCi] = Field(default_factory=list)
    processes: list[int] = Field(default_factory=list, description="PIDs running on this instance")
    leased: bool = Field(False, description="a controller lease holds this instance (kept like a busy one)")

    @property
    def busy(self) -> bool:
        return bool(self.processes) or self.leased

    def describe(self) -> str:
        text = f"GI {self.gpu_instance_id} ({self.profile} at {span(self.placement)})"
        if self.processes:
            text += f" with running processes (pid {', '.join(str(p) for p in self.processes)})"
        if self.leased:
            text += " held by a lease"
        return text


MigModeState = Literal["unsupported", "disabled", "enabled", "pending-enable", "pending-disable"]


class ObservedGpu(_Model):
    index: int
    name: str
    pci_device_id: str = Field(description="0xDDDDVVVV as in mig-parted device-filter")
    mig_capable: bool
    mig_current: bool = False
    mig_pending: bool = False
    profiles: list[GiProfile] | None = Field(
        default=None, description="None when NVML cannot list profiles (MIG mode off on a real GPU)"
    )
    profiles_borrowed_from: int | None = Field(
        default=None, description="index of a GPU of the same model whose profile table was used"
    )
    instances: list[ObservedGi] = Field(default_factory=list)
    pinned: list[tuple[str, int]] = Field(
        default_factory=list,
        description="(profile, placement start) of instances the controller placed for leases and this GPU has "
        "not created yet: created exactly there (the controller's claims cover those memory slices)",
    )

    @property
    def mig_state(self) -> MigModeState:
        if not self.mig_capable:
            return "unsupported"
        if self.mig_current == self.mig_pending:
            return "enabled" if self.mig_current else "disabled"
        return "pending-enable" if self.mig_pending else "pending-disable"

    def profile(self, name: str) -> GiProfile | None:
        return next((p for p in self.profiles or [] if p.name == name), None)

    def layout(self) -> list[LayoutEntry]:
        return layout_of(self.instances)


OperationKind = Literal["set-mig-mode", "destroy-ci", "destroy-gi", "create-gi", "create-ci"]


class Operation(_Model):
    """One mutating NVML call."""

    op: OperationKind
    gpu: int
    nvml: str = Field(description="the pynvml call, for people")
    mig_enabled: bool | None = None
    profile: str | None = None
    profile_id: int | None = None
    placement: Placement | None = None
    gpu_instance_id: int | None = Field(default=None, description="existing GI (destroy, create-ci on a kept GI)")
    compute_instance_id: int | None = None
    slices: int | None = Field(default=None, description="create-ci: the GI's slices (full compute instance)")


class LayoutEntry(_Model):
    profile: str
    profile_id: int
    placement: Placement
    gpu_instance_id: int | None = Field(default=None, description="None for an instance still to be created")
    state: Literal["kept", "created"]
    busy: bool = False


def layout_of(kept: Sequence[ObservedGi], created: Sequence[tuple[GiProfile, Placement]] = ()) -> list[LayoutEntry]:
    """The layout a GPU has (``kept`` instances) or will have (and the ``created`` ones), by placement."""
    entries = [
        LayoutEntry(
            profile=gi.profile,
            profile_id=gi.profile_id,
            placement=gi.placement,
            gpu_instance_id=gi.gpu_instance_id,
            state="kept",
            busy=gi.busy,
        )
        for gi in kept
    ] + [LayoutEntry(profile=p.name, profile_id=p.profile_id, placement=pl, state="created") for p, pl in created]
    return sorted(entries, key=lambda e: (e.placement.start, e.profile_id))


GpuPlanStatus = Literal["untouched", "change", "pending-reset", "blocked"]


class GpuPlan(_Model):
    index: int
    name: str
    status: GpuPlanStatus
    entry: int | None = Field(default=None, description="1-based config entry that selects this GPU")
    mig_enabled: bool | None = Field(default=None, description="target MIG mode (None: not selected)")
    mig_state: MigModeState
    reason: str | None = None
    blockers: list[str] = Field(default_factory=list)
    operations: list[Operation] = Field(default_factory=list)
    layout: list[LayoutEntry] = Field(default_factory=list, description="instances after the operations")
    deferred: bool = Field(
        default=False,
        description="instances are created after MIG mode becomes active (profile table unknown until then)",
    )


class MigPlan(_Model):
    config: str
    source: str
    force: bool = False
    gpus: list[GpuPlan]

    @property
    def blocked(self) -> bool:
        return any(g.status == "blocked" for g in self.gpus)

    @property
    def operations(self) -> list[Operation]:
        return [op for g in self.gpus for op in g.operations]


class MigValidationError(MigError):
    """The selected config cannot be applied to this host; nothing was changed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
