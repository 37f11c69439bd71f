"""GPU discovery through NVML: turn what ``pynvml`` reports into an ``Inventory``.

Every call goes through the public pynvml API, so the same code runs on a real driver and on the
simulator. A query the GPU does not support (``NVMLError_NotSupported``) leaves the field empty;
it is not an error.
"""

from __future__ import annotations

import ctypes
import socket
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from agent import __version__
from drivers.contract.inventory import (
    ComputeInstance,
    EccCounters,
    Gpu,
    GpuHealth,
    HealthSummary,
    HostIdentity,
    Inventory,
    MigInstance,
    MigState,
    NvLinkInfo,
    PciInfo,
    Placement,
    ProcessInfo,
    RemappedRows,
    Topology,
    VgpuInfo,
    VgpuType,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

T = TypeVar("T")

ARCHITECTURES = {2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere", 8: "ada", 9: "hopper",
                 10: "blackwell", 13: "rubin"}  # fmt: skip
COMPUTE_MODES = {0: "default", 1: "exclusive-thread", 2: "prohibited", 3: "exclusive-process"}
# nvmlDeviceGetNvLinkVersion returns an NVML_NVLINK_VERSION_* enum, not the generation.
NVLINK_VERSIONS = {1: "1.0", 2: "2.0", 3: "2.2", 4: "3.0", 5: "3.1", 6: "4.0", 7: "5.0", 8: "6.0"}
TOPOLOGY_LEVELS = {0: "X", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
# GPU-instance profile indexes NVML knows (NVML_GPU_INSTANCE_PROFILE_* constants, 0 .. COUNT-1).
GI_PROFILE_INDEX_COUNT = 0x12
# The compute-instance profile index that spans a whole GPU instance of N slices.
FULL_CI_PROFILE_INDEX = {1: 0x0, 2: 0x1, 3: 0x2, 4: 0x3, 6: 0x6, 7: 0x4, 8: 0x5}
MIB = 1024 * 1024


def optional(fn: Callable[..., T], *args: Any) -> T | None:
    """Call an NVML query; ``None`` when the device does not support it."""
    try:
        return fn(*args)
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NoData):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpu_handles() -> list[Any]:
    return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]


def mig_mode(handle: Any) -> MigState:
    try:
        current, pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return MigState(capable=False, state="unsupported")
    cur, pen = bool(current), bool(pending)
    # A mode change waits for a GPU reset (or reboot) on most systems: report it, never hide it.
    if cur == pen:
        state = "enabled" if cur else "disabled"
    else:
        state = "pending-reset"
    return MigState(capable=True, current=cur, pending=pen, state=state)  # type: ignore[arg-type]


def gpu_instance_profiles(handle: Any) -> list[Any]:
    """Every GPU-instance profile this GPU offers (MIG must be enabled, as with real NVML).

    Enumerates the profile *indexes* and returns NVML's profile-info structs, whose ``id`` is the
    profile *ID* that create and placement calls take.
    """
    profiles = []
    for index in range(GI_PROFILE_INDEX_COUNT):
        try:
            profiles.append(pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index))
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
    return profiles


def possible_placements(handle: Any, profile_id: int) -> list[Placement]:
    count = ctypes.c_uint(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return [Placement(start=array[i].start, size=array[i].size) for i in range(count.value)]


def profile_display_name(info: Any) -> str:
    """NVML fills the profile name as nvidia-smi prints it ('MIG 1g.5gb'); keep the profile part."""
    name = _text(info.name).strip()
    return name.removeprefix("MIG ").strip()


def _gpu_instances(handle: Any, profile: Any) -> list[Any]:
    capacity = max(int(profile.instanceCount), 1)
    array = (pynvml.c_nvmlGpuInstance_t * capacity)()
    count = ctypes.c_uint(capacity)
    pynvml.nvmlDeviceGetGpuInstances(handle, profile.id, array, ctypes.byref(count))
    return [array[i] for i in range(count.value)]


def _compute_instances(gi: Any, gi_slices: int) -> list[ComputeInstance]:
    found: list[ComputeInstance] = []
    for ci_index in sorted(set(FULL_CI_PROFILE_INDEX.values()) | {0x7}):
        try:
            ci_profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, ci_index, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        capacity = max(int(ci_profile.instanceCount), 1)
        array = (pynvml.c_nvmlComputeInstance_t * capacity)()
        count = ctypes.c_uint(capacity)
        pynvml.nvmlGpuInstanceGetComputeInstances(gi, ci_profile.id, array, ctypes.byref(count))
        for i in range(count.value):
            info = pynvml.nvmlComputeInstanceGetInfo(array[i])
            if any(c.id == info.id for c in found):
                continue
            found.append(
                ComputeInstance(
                    id=info.id,
                    profile_id=info.profileId,
                    slices=int(ci_profile.sliceCount),
                    placement=Placement(start=info.placement.start, size=info.placement.size),
                )
            )
    return sorted(found, key=lambda c: c.id)


def _mig_device_uuids(handle: Any) -> dict[tuple[int, int], str]:
    """MIG device UUIDs keyed by (GPU instance id, compute instance id)."""
    uuids: dict[tuple[int, int], str] = {}
    for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except (pynvml.NVMLError_NotFound, pynvml.NVMLError_InvalidArgument):
            continue
        key = (pynvml.nvmlDeviceGetGpuInstanceId(mig), pynvml.nvmlDeviceGetComputeInstanceId(mig))
        uuids[key] = _text(pynvml.nvmlDeviceGetUUID(mig))
    return uuids


def running_processes(handle: Any) -> list[ProcessInfo]:
    procs = optional(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    result = []
    for p in procs:
        used = getattr(p, "usedGpuMemory", None)
        gi = getattr(p, "gpuInstanceId", None)
        ci = getattr(p, "computeInstanceId", None)
        invalid = 0xFFFFFFFF
        result.append(
            ProcessInfo(
                pid=int(p.pid),
                used_memory_mib=int(used) // MIB if used is not None else None,
                gpu_instance_id=None if gi in (None, invalid) else int(gi),
                compute_instance_id=None if ci in (None, invalid) else int(ci),
            )
        )
    return result


def mig_instances(handle: Any, processes: list[ProcessInfo]) -> list[MigInstance]:
    uuids = _mig_device_uuids(handle)
    instances: list[MigInstance] = []
    for profile in gpu_instance_profiles(handle):
        for gi in _gpu_instances(handle, profile):
            info = pynvml.nvmlGpuInstanceGetInfo(gi)
            cis = _compute_instances(gi, int(profile.sliceCount))
            uuid = next((uuids[(info.id, c.id)] for c in cis if (info.id, c.id) in uuids), None)
            instances.append(
                MigInstance(
                    gpu_instance_id=info.id,
                    profile=profile_display_name(profile),
                    profile_id=int(profile.id),
                    placement=Placement(start=info.placement.start, size=info.placement.size),
                    memory_mib=int(profile.memorySizeMB),
                    sm_count=int(profile.multiprocessorCount),
                    uuid=uuid,
                    compute_instances=cis,
                    processes=[p for p in processes if p.gpu_instance_id == info.id],
                )
            )
    return sorted(instances, key=lambda m: (m.placement.start, m.gpu_instance_id))


def _ecc(handle: Any) -> EccCounters:
    def counter(error_type: int, counter_type: int) -> int | None:
        return optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, error_type, counter_type)

    corrected, uncorrected = (
        pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    )
    return EccCounters(
        volatile_corrected=counter(corrected, pynvml.NVML_VOLATILE_ECC),
        volatile_uncorrected=counter(uncorrected, pynvml.NVML_VOLATILE_ECC),
        aggregate_corrected=counter(corrected, pynvml.NVML_AGGREGATE_ECC),
        aggregate_uncorrected=counter(uncorrected, pynvml.NVML_AGGREGATE_ECC),
    )


def _health(handle: Any) -> GpuHealth:
    retired = 0
    any_retired = False
    for cause in (pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                  pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR):  # fmt: skip
        pages = optional(pynvml.nvmlDeviceGetRetiredPages, handle, cause)
        if pages is not None:
            any_retired = True
            retired += len(pages)
    pending = optional(pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    rows = optional(pynvml.nvmlDeviceGetRemappedRows, handle)
    return GpuHealth(
        ecc=_ecc(handle),
        retired_pages=retired if any_retired else None,
        retired_pages_pending=None if pending is None else bool(pending),
        remapped_rows=None
        if rows is None
        else RemappedRows(correctable=rows[0], uncorrectable=rows[1], pending=bool(rows[2]), failure=bool(rows[3])),
    )


def _nvlink(handle: Any) -> NvLinkInfo:
    active = 0
    version: str | None = None
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = pynvml.nvmlDeviceGetNvLinkState(handle, link)
        except (
            pynvml.NVMLError_NotSupported,
            pynvml.NVMLError_InvalidArgument,
            pynvml.NVMLError_FunctionNotFound,
        ):
            break
        if state:
            active += 1
            enum = optional(pynvml.nvmlDeviceGetNvLinkVersion, handle, link)
            version = NVLINK_VERSIONS.get(enum, version) if enum is not None else version
    return NvLinkInfo(links_active=active, version=version)


def _vgpu(handle: Any) -> VgpuInfo | None:
    mode = optional(pynvml.nvmlDeviceGetVirtualizationMode, handle)
    if mode != pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU:
        return None
    supported = optional(pynvml.nvmlDeviceGetSupportedVgpus, handle) or []
    creatable = optional(pynvml.nvmlDeviceGetCreatableVgpus, handle) or []
    types = [
        VgpuType(
            id=int(type_id),
            name=_text(pynvml.nvmlVgpuTypeGetName(type_id)),
            type_class=_text(pynvml.nvmlVgpuTypeGetClass(type_id)),
            framebuffer_mib=int(pynvml.nvmlVgpuTypeGetFramebufferSize(type_id)) // MIB,
            max_instances=int(pynvml.nvmlVgpuTypeGetMaxInstances(handle, type_id)),
        )
        for type_id in supported
    ]
    return VgpuInfo(supported=types, creatable=[int(t) for t in creatable])


def describe_gpu(index: int, handle: Any) -> Gpu:
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    arch = optional(pynvml.nvmlDeviceGetArchitecture, handle)
    mig = mig_mode(handle)
    processes = running_processes(handle)
    power = optional(pynvml.nvmlDeviceGetPowerUsage, handle)
    limit = optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    util = optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
    compute_mode = optional(pynvml.nvmlDeviceGetComputeMode, handle)
    return Gpu(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        minor_number=optional(pynvml.nvmlDeviceGetMinorNumber, handle),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        serial=optional(lambda h: _text(pynvml.nvmlDeviceGetSerial(h)), handle),
        pci=PciInfo(
            bus_id=_text(pci.busId),
            device_id=f"0x{pci.pciDeviceId:08X}",
            subsystem_id=f"0x{pci.pciSubSystemId:08X}" if pci.pciSubSystemId else None,
        ),
        architecture=ARCHITECTURES.get(arch, "unknown") if arch is not None else "unknown",
        compute_capability=f"{major}.{minor}",
        memory_total_mib=int(memory.total) // MIB,
        memory_used_mib=int(memory.used) // MIB,
        mig=mig,
        mig_instances=mig_instances(handle, processes) if mig.current else [],
        compute_mode=COMPUTE_MODES.get(compute_mode, "unknown") if compute_mode is not None else "unknown",  # type: ignore[arg-type]
        temperature_c=optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        power_draw_w=power / 1000 if power is not None else None,
        power_limit_w=limit / 1000 if limit is not None else None,
        utilization_gpu_pct=int(util.gpu) if util is not None else None,
        processes=processes,
        nvlink=_nvlink(handle),
        vgpu=_vgpu(handle),
        health=_health(handle),
    )


def _nvlink_peer(a: Any, b: Any) -> bool:
    status = optional(pynvml.nvmlDeviceGetP2PStatus, a, b, pynvml.NVML_P2P_CAPS_INDEX_NVLINK)
    return status == pynvml.NVML_P2P_STATUS_OK


def topology(handles: list[Any], gpus: list[Gpu]) -> Topology:
    """Pairwise connectivity like ``nvidia-smi topo -m``: NV<links> for NVLink peers, else the PCIe level.

    Also records each GPU's NVLink peers (by PCI bus id); with NVSwitch the remote end of a link is
    the switch, so peers come from the NVLink P2P status, not from the links' remote PCI info.
    """
    matrix: list[list[str]] = []
    for i, a in enumerate(handles):
        row = []
        for j, b in enumerate(handles):
            if i == j:
                row.append("X")
            elif gpus[i].nvlink.links_active and _nvlink_peer(a, b):
                row.append(f"NV{gpus[i].nvlink.links_active}")
                gpus[i].nvlink.peers.append(gpus[j].pci.bus_id)
            else:
                level = optional(pynvml.nvmlDeviceGetTopologyCommonAncestor, a, b)
                row.append(TOPOLOGY_LEVELS.get(level, "SYS") if level is not None else "SYS")
        matrix.append(row)
    return Topology(matrix=matrix)


def summarize(gpus: list[Gpu]) -> HealthSummary:
    summary = HealthSummary()
    for gpu in gpus:
        setattr(summary, gpu.health.state, getattr(summary, gpu.health.state) + 1)
    return summary


def collect_inventory(*, hostname: str | None = None, simulated: bool = False) -> Inventory:
    """Read every GPU through NVML (which must be initialised) into an ``Inventory``."""
    handles = gpu_handles()
    gpus = [describe_gpu(i, h) for i, h in enumerate(handles)]
    cuda = pynvml.nvmlSystemGetCudaDriverVersion()
    return Inventory(
        host=HostIdentity(hostname=hostname or socket.gethostname(), agent_version=__version__, simulated=simulated),
        driver_version=_text(pynvml.nvmlSystemGetDriverVersion()),
        cuda_driver_version=f"{cuda // 1000}.{(cuda % 1000) // 10}",
        nvml_version=optional(lambda: _text(pynvml.nvmlSystemGetNVMLVersion())),
        gpus=gpus,
        topology=topology(handles, gpus),
        health=summarize(gpus),
    )
