"""Converge GPUs on a mig-parted config through pynvml: observe, plan, run, observe again.

Crash safety comes from the shape of the loop rather than from a journal: each run plans from what
NVML reports *now*, every operation is a single NVML call, and the planner's choices are a pure
function of the observed state and the config. An apply killed after any call therefore leaves a
state from which the next run plans the remaining calls and reaches the same layout; a GPU that
already matches is never touched, so applying twice changes nothing the second time.

NVML must be initialised by the caller (``drivers.nvml.session.open_nvml``).
"""

from __future__ import annotations

import ctypes
import math
import warnings
from collections.abc import Mapping, Sequence, Set
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.discovery import FULL_CI_PROFILE_INDEX, gpu_handles, possible_placements, running_processes
from agent.mig.config import MigPartedConfig, parse_mig_config
from agent.mig.model import (
    GiProfile,
    GpuPlan,
    LayoutEntry,
    MigPlan,
    ObservedCi,
    ObservedGi,
    ObservedGpu,
    Operation,
)
from agent.mig.planner import plan_mig
from drivers.contract.inventory import Placement

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

GI_PROFILE_INDEX_COUNT = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT
CI_PROFILE_INDEX_COUNT = 0x9  # NVML_COMPUTE_INSTANCE_PROFILE_COUNT
ENGINE_PROFILE_SHARED = 0  # NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
MIB = 1024 * 1024
# Attribute suffix implied by a GPU-instance profile index, for drivers that leave info.name empty.
_PROFILE_INDEX_ATTRIBUTE = {0x7: "+me", 0xA: "+gfx", 0xB: "+gfx", 0xC: "+gfx", 0xD: "-me", 0xE: "-me",
                            0xF: "+me.all", 0x10: "+me.all", 0x11: "+gfx"}  # fmt: skip
# nvmlDeviceSetMigMode's activation status (returned, not raised) when the mode stays pending.
_ACTIVATION = {
    19: "GPU in use (IN_USE): stop its clients",
    16: "GPU reset required (RESET_REQUIRED), e.g. in a VM or with the GPU bound",
}
MAX_ROUNDS = 4  # a mode change and instance changes take two; one more proves nothing is left


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def profile_name(info: Any, index: int, device_memory_bytes: int) -> str:
    """The profile's name as NVML fills it ('MIG 1g.5gb' -> '1g.5gb').

    When the driver leaves the name empty, derive it the way go-nvlib does (which is what
    mig-parted configs are written against): memory fraction rounded up to eighths of the GPU,
    times the GPU's memory in whole GiB, rounded half away from zero.
    """
    name = _text(info.name).strip().removeprefix("MIG ").strip()
    if name:
        return name
    total_gib = math.ceil(device_memory_bytes / 2**30)
    fraction = math.ceil(int(info.memorySizeMB) * MIB / device_memory_bytes * 8) / 8
    gb = math.floor(fraction * total_gib + 0.5)
    return f"{int(info.sliceCount)}g.{gb}gb{_PROFILE_INDEX_ATTRIBUTE.get(index, '')}"


def read_profiles(handle: Any) -> list[GiProfile] | None:
    """The GPU-instance profile table from NVML; ``None`` when NVML offers none (MIG off)."""
    memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    profiles: list[GiProfile] = []
    for index in range(GI_PROFILE_INDEX_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        placements = possible_placements(handle, int(info.id))
        profiles.append(
            GiProfile(
                name=profile_name(info, index, memory),
                profile_id=int(info.id),
                profile_index=index,
                slices=int(info.sliceCount),
                memory_mib=int(info.memorySizeMB),
                max_instances=int(info.instanceCount),
                placements=[Placement(start=p.start, size=p.size) for p in placements],
            )
        )
    return profiles or None


def _gpu_instance_handles(handle: Any, profile: GiProfile) -> list[Any]:
    capacity = max(profile.max_instances, 1)
    array = (pynvml.c_nvmlGpuInstance_t * capacity)()
    count = ctypes.c_uint(capacity)
    pynvml.nvmlDeviceGetGpuInstances(handle, profile.profile_id, array, ctypes.byref(count))
    return [array[i] for i in range(count.value)]


def _compute_instances(gi: Any) -> list[ObservedCi]:
    found: dict[int, ObservedCi] = {}
    for index in range(CI_PROFILE_INDEX_COUNT):
        try:
            ci_profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, ENGINE_PROFILE_SHARED)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        capacity = max(int(ci_profile.instanceCount), 1)
        array = (pynvml.c_nvmlComputeInstance_t * capacity)()
        count = ctypes.c_uint(capacity)
        pynvml.nvmlGpuInstanceGetComputeInstances(gi, ci_profile.id, array, ctypes.byref(count))
        for i in range(count.value):
            info = pynvml.nvmlComputeInstanceGetInfo(array[i])
            found.setdefault(
                int(info.id),
                ObservedCi(id=int(info.id), profile_id=int(info.profileId), slices=int(ci_profile.sliceCount)),
            )
    return sorted(found.values(), key=lambda c: c.id)


def observe_gpu(index: int, handle: Any) -> ObservedGpu:
    """One GPU's MIG mode, profile table and instances (with the PIDs running on each)."""
    name = _text(pynvml.nvmlDeviceGetName(handle))
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    device_id = f"0x{int(pci.pciDeviceId):08X}"
    try:
        current, pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return ObservedGpu(index=index, name=name, pci_device_id=device_id, mig_capable=False)
    gpu = ObservedGpu(
        index=index,
        name=name,
        pci_device_id=device_id,
        mig_capable=True,
        mig_current=bool(current),
        mig_pending=bool(pending),
        profiles=read_profiles(handle),
    )
    if not gpu.mig_current or gpu.profiles is None:
        return gpu
    pids: dict[int, list[int]] = {}
    for proc in running_processes(handle):
        if proc.gpu_instance_id is not None:
            pids.setdefault(proc.gpu_instance_id, []).append(proc.pid)
    for profile in gpu.profiles:
        for gi in _gpu_instance_handles(handle, profile):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
            gpu.instances.append(
                ObservedGi(
                    gpu_instance_id=int(info.id),
                    profile=profile.name,
                    profile_id=profile.profile_id,
                    placement=Placement(start=info.placement.start, size=info.placement.size),
                    compute_instances=_compute_instances(gi),
                    processes=sorted(pids.get(int(info.id), [])),
                )
            )
    gpu.instances.sort(key=lambda g: (g.placement.start, g.gpu_instance_id))
    return gpu


def observe(
    handles: Sequence[Any] | None = None,
    leased: Mapping[int, Set[int]] | None = None,
    pinned: Mapping[int, Sequence[tuple[str, int]]] | None = None,
) -> list[ObservedGpu]:
    """Observe every GPU (``handles`` in index order; default: all GPUs NVML sees).

    ``leased`` maps a GPU index to the GPU-instance ids a controller lease holds: the planner keeps those
    like instances with running processes, so releasing one lease never destroys another lease's instance
    of the same profile. ``pinned`` maps a GPU index to the ``(profile, placement start)`` the controller chose
    for lease instances not created yet: the planner creates them exactly there.

    NVML lists GPU-instance profiles only while MIG mode is on. A GPU with MIG off borrows the
    table of another GPU of the same model on this host that has it on, so a config can be
    checked against it before its mode is changed.
    """
    handles = gpu_handles() if handles is None else handles
    gpus = [observe_gpu(i, h) for i, h in enumerate(handles)]
    for gpu in gpus:
        held = (leased or {}).get(gpu.index, set())
        for gi in gpu.instances:
            gi.leased = gi.gpu_instance_id in held
        gpu.pinned = list((pinned or {}).get(gpu.index, ()))
    for gpu in gpus:
        if gpu.mig_capable and gpu.profiles is None:
            donor = next((g for g in gpus if g.pci_device_id == gpu.pci_device_id and g.profiles), None)
            if donor is not None:
                gpu.profiles = donor.profiles
                gpu.profiles_borrowed_from = donor.index
    return gpus


def plan_from_nvml(
    config: MigPartedConfig,
    name: str,
    *,
    force: bool = False,
    handles: Sequence[Any] | None = None,
    leased: Mapping[int, Set[int]] | None = None,
) -> MigPlan:
    """Observe through NVML and plan; nothing is changed. ``leased`` instances are kept, as in ``observe``."""
    return plan_mig(config, name, observe(handles, leased), force=force)


# --- running operations ---------------------------------------------------------------------


class ExecutedOperation(Operation):
    result: Literal["ok", "pending-reset", "failed"] = "ok"
    detail: str | None = Field(default=None, description="activation status, NVML error, ids created")


ApplyStatus = Literal["untouched", "changed", "pending-reset", "blocked", "failed"]


class GpuApplyResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    status: ApplyStatus
    mig_state: str
    reason: str | None = None
    blockers: list[str] = Field(default_factory=list)
    operations: list[ExecutedOperation] = Field(default_factory=list)
    layout: list[LayoutEntry] = Field(default_factory=list, description="instances observed after the apply")


class MigApplyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str
    source: str
    force: bool
    gpus: list[GpuApplyResult]

    @property
    def converged(self) -> bool:
        return all(g.status in ("untouched", "changed") for g in self.gpus)

    @property
    def blocked(self) -> bool:
        return any(g.status == "blocked" for g in self.gpus)

    @property
    def failed(self) -> bool:
        return any(g.status == "failed" for g in self.gpus)

    @property
    def pending_reset(self) -> bool:
        return any(g.status == "pending-reset" for g in self.gpus)


def _full_ci_profile_id(gi: Any, slices: int) -> int:
    """The compute-instance profile spanning the whole GI (what ``nvidia-smi mig -cgi ... -C`` creates)."""
    preferred = [FULL_CI_PROFILE_INDEX.get(slices)]
    if slices == 1:
        preferred.append(0x7)  # 1_SLICE_REV1: the default CI of 1_SLICE_REV2 GIs on Hopper
    order = [i for i in preferred if i is not None] + list(range(CI_PROFILE_INDEX_COUNT))
    for index in order:
        try:
            info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, ENGINE_PROFILE_SHARED)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        if int(info.sliceCount) == slices:
            return int(info.id)
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


class _GpuRunner:
    """Runs one GPU's planned operations, remembering GIs it created for their create-ci."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.created: dict[tuple[int, int], Any] = {}

    def _gi(self, op: Operation) -> Any:
        if op.gpu_instance_id is not None:
            return pynvml.nvmlDeviceGetGpuInstanceById(self.handle, op.gpu_instance_id)
        assert op.profile_id is not None and op.placement is not None
        return self.created[(op.profile_id, op.placement.start)]

    def run(self, op: Operation) -> ExecutedOperation:
        done = ExecutedOperation(**op.model_dump())
        if op.op == "set-mig-mode":
            mode = pynvml.NVML_DEVICE_MIG_ENABLE if op.mig_enabled else pynvml.NVML_DEVICE_MIG_DISABLE
            activation = pynvml.nvmlDeviceSetMigMode(self.handle, mode)
            current, _pending = pynvml.nvmlDeviceGetMigMode(self.handle)
            if bool(current) != op.mig_enabled:
                done.result = "pending-reset"
                why = _ACTIVATION.get(int(activation), f"activation status {activation}")
                done.detail = f"{why}; the new mode takes effect at the next GPU reset"
            else:
                done.detail = f"activation status {activation}"
        elif op.op == "destroy-ci":
            gi = self._gi(op)
            pynvml.nvmlComputeInstanceDestroy(pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, op.compute_instance_id))
        elif op.op == "destroy-gi":
            pynvml.nvmlGpuInstanceDestroy(self._gi(op))
        elif op.op == "create-gi":
            assert op.placement is not None and op.profile_id is not None
            placement = pynvml.c_nvmlGpuInstancePlacement_t(op.placement.start, op.placement.size)
            gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(self.handle, op.profile_id, ctypes.byref(placement))
            self.created[(op.profile_id, op.placement.start)] = gi
            done.gpu_instance_id = int(pynvml.nvmlGpuInstanceGetInfo(gi).id)
            done.detail = f"GI {done.gpu_instance_id}"
        elif op.op == "create-ci":
            assert op.slices is not None
            gi = self._gi(op)
            ci_profile_id = _full_ci_profile_id(gi, op.slices)
            ci = pynvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile_id)
            done.gpu_instance_id = int(pynvml.nvmlGpuInstanceGetInfo(gi).id)
            done.compute_instance_id = int(pynvml.nvmlComputeInstanceGetInfo(ci).id)
            done.detail = f"CI profile {ci_profile_id} -> CI {done.compute_instance_id}"
        return done


def _run_gpu(handle: Any, plan: GpuPlan, log: list[ExecutedOperation]) -> str | None:
    """Run a GPU's operations until done, a mode change, or an NVML error (returned as text)."""
    runner = _GpuRunner(handle)
    for op in plan.operations:
        try:
            done = runner.run(op)
        except pynvml.NVMLError as exc:
            failed = ExecutedOperation(**op.model_dump(), result="failed", detail=str(exc))
            log.append(failed)
            return f"{op.nvml} failed: {exc}"
        log.append(done)
        if op.op == "set-mig-mode":
            break  # re-observe: the profile table and instances change with the mode
    return None


def converge_mig(
    config: MigPartedConfig,
    name: str,
    *,
    force: bool = False,
    handles: Sequence[Any] | None = None,
    leased: Mapping[int, Set[int]] | None = None,
    pinned: Mapping[int, Sequence[tuple[str, int]]] | None = None,
) -> MigApplyReport:
    """Bring every GPU to config ``name``, then report what was done and what the GPUs now hold.

    Raises ``MigConfigError`` / ``MigValidationError`` before any change when the config is unknown
    or does not fit this host. GPUs whose mode change waits for a reset report ``pending-reset``;
    a GPU whose target needs an instance with running processes (without ``force``) reports
    ``blocked`` and names it; everything else converges.
    """
    handles = gpu_handles() if handles is None else list(handles)
    executed: dict[int, list[ExecutedOperation]] = {i: [] for i in range(len(handles))}
    errors: dict[int, str] = {}
    for _ in range(MAX_ROUNDS):
        plan = plan_mig(config, name, observe(handles, leased, pinned), force=force)
        work = [
            g
            for g in plan.gpus
            if g.status == "change"
            and g.index not in errors
            and not any(op.result == "pending-reset" for op in executed[g.index])
        ]
        if not work:
            break
        for gpu_plan in work:
            error = _run_gpu(handles[gpu_plan.index], gpu_plan, executed[gpu_plan.index])
            if error:
                errors[gpu_plan.index] = error
    final_gpus = observe(handles, leased, pinned)
    final = plan_mig(config, name, final_gpus, force=force)
    results = []
    for gpu, gpu_plan in zip(final_gpus, final.gpus, strict=True):
        ops = executed[gpu.index]
        status: ApplyStatus
        reason = gpu_plan.reason
        if gpu.index in errors:
            status, reason = "failed", errors[gpu.index]
        elif gpu_plan.status == "blocked":
            status = "blocked"
        elif gpu_plan.status == "pending-reset":
            status = "pending-reset"
        elif gpu_plan.status == "change":
            status, reason = "failed", "did not converge: operations remain after the last round"
        else:
            status = "changed" if ops else "untouched"
        results.append(
            GpuApplyResult(
                index=gpu.index,
                name=gpu.name,
                status=status,
                mig_state=gpu.mig_state,
                reason=reason,
                blockers=gpu_plan.blockers,
                operations=ops,
                layout=gpu.layout(),
            )
        )
    return MigApplyReport(config=name, source=config.source, force=force, gpus=results)


def apply_mig_document(
    document: str,
    name: str,
    *,
    force: bool = False,
    source: str = "<desired state>",
    leased: Mapping[int, Set[int]] | None = None,
) -> MigApplyReport:
    """Controller entry point: a mig-parted document (text, as the controller sends it) + selected name;
    ``leased``: GPU index -> GPU-instance ids held by leases (kept, see :func:`observe`)."""
    return converge_mig(parse_mig_config(document, source), name, force=force, leased=leased)
