"""Health, topology, vGPU, crash hook and spec errors through the pynvml API."""

from __future__ import annotations

import re
from pathlib import Path

import pynvml as N
import pytest

from drivers.nvml.sim.host import SimulatedCrash
from drivers.nvml.sim.hostspec import HostSpecError
from drivers.nvml.sim.install import bundled_specs, install, uninstall
from drivers.nvml.sim.state import default_state_path
from tests.support.nvml import Sim


def test_processes_v3_v2_and_mig_filter(sim: Sim) -> None:
    sim("a100-40gb-2x-mig")
    h = N.nvmlDeviceGetHandleByIndex(1)
    (p,) = N.nvmlDeviceGetComputeRunningProcesses(h)
    assert (p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId) == (4242, 1536 * 2**20, 13, 0)
    assert [x.pid for x in N.nvmlDeviceGetComputeRunningProcesses_v2(h)] == [4242]
    migs = [N.nvmlDeviceGetMigDeviceHandleByIndex(h, i) for i in range(3)]
    assert [len(N.nvmlDeviceGetComputeRunningProcesses(m)) for m in migs] == [0, 0, 1]
    assert N.nvmlDeviceGetComputeRunningProcesses(N.nvmlDeviceGetHandleByIndex(0)) == []
    with pytest.raises(N.NVMLError_InUse):
        N.nvmlGpuInstanceDestroy(N.nvmlDeviceGetGpuInstanceById(h, 13))


def test_xid_via_event_set_then_timeout(sim: Sim) -> None:
    host = sim("ecc-faulty")
    es = N.nvmlEventSetCreate()
    for i in range(2):
        N.nvmlDeviceRegisterEvents(N.nvmlDeviceGetHandleByIndex(i), N.nvmlEventTypeXidCriticalError, es)
    got = [N.nvmlEventSetWait_v2(es, 0) for _ in range(2)]
    assert [e.eventData for e in got] == [48, 79]
    assert N.nvmlDeviceGetIndex(got[0].device) == 1
    with pytest.raises(N.NVMLError_Timeout):
        N.nvmlEventSetWait_v2(es, 10)
    host.inject_xid(0, 31)
    ev = N.nvmlEventSetWait(es, 100)
    assert (ev.eventType, ev.eventData, N.nvmlDeviceGetIndex(ev.device)) == (N.nvmlEventTypeXidCriticalError, 31, 0)
    N.nvmlEventSetFree(es)


def test_ecc_and_remapped_rows(sim: Sim) -> None:
    host = sim("ecc-faulty")
    h = N.nvmlDeviceGetHandleByIndex(1)
    assert N.nvmlDeviceGetEccMode(h) == [1, 1]
    assert N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 2
    assert N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_CORRECTED, N.NVML_AGGREGATE_ECC) == 40
    assert N.nvmlDeviceGetRemappedRows(h) == (1, 2, 1, 0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    host.inject_ecc(0, uncorrected=3)
    h0 = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceGetTotalEccErrors(h0, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 3
    host.set_remapped_rows(0, uncorrectable=1, failure=True)
    assert N.nvmlDeviceGetRemappedRows(h0) == (0, 1, 0, 1)
    host.reset_gpu(1)
    assert N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 0
    assert N.nvmlDeviceGetRemappedRows(h)[2] == 0


def test_retired_pages_on_turing(sim: Sim) -> None:
    sim("t4-retired-pages")
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert len(N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)) == 2
    pages = N.nvmlDeviceGetRetiredPages_v2(h, N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
    assert len(pages) == 1 and pages[0]["timestamp"] > 0
    assert N.nvmlDeviceGetRetiredPagesPendingStatus(h) == 1
    assert N.nvmlDeviceGetRetiredPages(N.nvmlDeviceGetHandleByIndex(1), 0) == []
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetRemappedRows(h)


def test_lost_gpu(sim: Sim) -> None:
    host = sim("l4-4x")
    host.set_lost(2, True)
    h = N.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(N.NVMLError_GpuIsLost):
        N.nvmlDeviceGetName(h)
    assert N.nvmlDeviceGetName(N.nvmlDeviceGetHandleByIndex(1)) == "NVIDIA L4"
    host.set_lost(2, False)
    assert N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU) == 34


def test_identity_and_topology_h100(sim: Sim) -> None:
    sim("h100-8x")
    hs = [N.nvmlDeviceGetHandleByIndex(i) for i in range(N.nvmlDeviceGetCount())]
    assert len(hs) == 8
    assert N.nvmlDeviceGetName(hs[0]) == "NVIDIA H100 80GB HBM3"
    assert N.nvmlDeviceGetCudaComputeCapability(hs[0]) == (9, 0)
    assert N.nvmlDeviceGetArchitecture(hs[0]) == N.NVML_DEVICE_ARCH_HOPPER
    assert N.nvmlDeviceGetMemoryInfo(hs[0]).total == 81559 * 2**20
    assert N.nvmlDeviceGetMemoryInfo(hs[0], version=N.nvmlMemory_v2).reserved > 0
    pci = N.nvmlDeviceGetPciInfo(hs[3])
    assert pci.pciDeviceId == 0x233010DE and pci.busId == "00000000:5D:00.0"
    assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(pci.busId)) == 3
    assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(N.nvmlDeviceGetUUID(hs[5]))) == 5
    assert N.nvmlSystemGetCudaDriverVersion() == 12040
    assert N.nvmlDeviceGetTopologyCommonAncestor(hs[0], hs[1]) == N.NVML_TOPOLOGY_SINGLE
    assert N.nvmlDeviceGetTopologyCommonAncestor(hs[0], hs[2]) == N.NVML_TOPOLOGY_NODE
    assert N.nvmlDeviceGetTopologyCommonAncestor(hs[0], hs[7]) == N.NVML_TOPOLOGY_SYSTEM
    assert N.nvmlDeviceGetP2PStatus(hs[0], hs[7], N.NVML_P2P_CAPS_INDEX_NVLINK) == N.NVML_P2P_STATUS_OK
    assert all(N.nvmlDeviceGetNvLinkState(hs[0], link) == 1 for link in range(18))
    assert N.nvmlDeviceGetNvLinkVersion(hs[0], 0) == 6
    assert N.nvmlDeviceGetNvLinkRemotePciInfo(hs[0], 1).pciDeviceId == 0x22A310DE
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlDeviceGetNvLinkState(hs[0], 18)
    assert N.nvmlDeviceGetPowerManagementLimit(hs[0]) == 700_000


def test_no_nvlink_on_l4(sim: Sim) -> None:
    sim("l4-4x")
    a, b = N.nvmlDeviceGetHandleByIndex(0), N.nvmlDeviceGetHandleByIndex(3)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetNvLinkState(a, 0)
    assert N.nvmlDeviceGetP2PStatus(a, b, N.NVML_P2P_CAPS_INDEX_NVLINK) == N.NVML_P2P_STATUS_NOT_SUPPORTED
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetSupportedVgpus(a)


def test_a_vgpu_host_offers_mig_backed_types_on_a_gpu_in_mig_mode_and_time_sliced_ones_otherwise(sim: Sim) -> None:
    host = sim("a100-vgpu-mig")
    names = [
        [N.nvmlVgpuTypeGetName(t) for t in N.nvmlDeviceGetSupportedVgpus(N.nvmlDeviceGetHandleByIndex(i))]
        for i in range(2)
    ]
    assert names[0][:3] == ["NVIDIA A100-7-40C", "NVIDIA A100-4-20C", "NVIDIA A100-3-20C"]
    assert all(re.fullmatch(r"NVIDIA A100-\d-\d+CM?E?", n) for n in names[0])
    assert names[1] == [f"NVIDIA A100-{gb}C" for gb in (40, 20, 10, 8, 5, 4)]
    # MIG on for GPU 1 (after its reset): it offers the MIG-backed types from then on.
    h1 = N.nvmlDeviceGetHandleByIndex(1)
    N.nvmlDeviceSetMigMode(h1, N.NVML_DEVICE_MIG_ENABLE)
    assert N.nvmlVgpuTypeGetName(N.nvmlDeviceGetSupportedVgpus(h1)[0]) == "NVIDIA A100-40C"  # pending: not yet
    host.reset_gpu(1)
    assert [N.nvmlVgpuTypeGetName(t) for t in N.nvmlDeviceGetSupportedVgpus(h1)] == names[0]


def test_vgpu_host(sim: Sim) -> None:
    sim("a16-vgpu")
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceGetVirtualizationMode(h) == N.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU
    assert N.nvmlDeviceGetHostVgpuMode(h) == N.NVML_HOST_VGPU_MODE_SRIOV
    ids = N.nvmlDeviceGetSupportedVgpus(h)
    assert N.nvmlDeviceGetCreatableVgpus(h) == ids and len(ids) == 3
    names = [N.nvmlVgpuTypeGetName(i) for i in ids]
    assert names == ["NVIDIA A16-16C", "NVIDIA A16-8C", "NVIDIA A16-4C"]
    assert N.nvmlVgpuTypeGetClass(ids[2]) == "Compute"
    assert N.nvmlVgpuTypeGetFramebufferSize(ids[2]) == 4096 * 2**20
    assert [N.nvmlVgpuTypeGetMaxInstances(h, i) for i in ids] == [1, 2, 4]
    assert N.nvmlVgpuTypeGetMaxInstancesPerVm(ids[0]) == 1
    assert N.nvmlVgpuTypeGetDeviceID(ids[0])[0] == 0x25B610DE
    assert N.nvmlDeviceGetActiveVgpus(h) == []


def test_compute_mode(sim: Sim) -> None:
    host = sim("a100-40gb-2x-mig")
    h = N.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceSetComputeMode(h, N.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
    m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    N.nvmlDeviceSetComputeMode(m, N.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
    assert N.nvmlDeviceGetComputeMode(m) == N.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS
    assert N.nvmlDeviceGetComputeMode(h) == N.NVML_COMPUTEMODE_DEFAULT
    assert [x.call for x in host.mutation_log] == ["nvmlDeviceSetComputeMode"]


def test_fail_after_crash_hook(sim: Sim) -> None:
    host = sim("a100-40gb-2x-mig")
    h = N.nvmlDeviceGetHandleByIndex(0)
    host.fail_after(2)
    gi = N.nvmlDeviceCreateGpuInstance(h, 19)
    with pytest.raises(SimulatedCrash):
        N.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    assert [x.call for x in host.mutation_log] == ["nvmlDeviceCreateGpuInstance"]
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlGpuInstanceGetComputeInstanceById(gi, 0)
    N.nvmlGpuInstanceCreateComputeInstance(gi, 0)  # hook is one-shot


def test_bad_specs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus:\n  - product: RTX-9999\n")
    with pytest.raises(HostSpecError, match=r"bad\.yaml[\s\S]*gpus\.0\.product[\s\S]*H100-80GB"):
        install(bad)
    bad.write_text("gpus:\n  - product: L4\n    mig: enabled\n")
    with pytest.raises(HostSpecError, match="not MIG-capable"):
        install(bad)
    bad.write_text("gpus:\n  - product: A100-40GB\n    mig: enabled\n    mig_instances: [{profile: 9g.99gb}]\n")
    with pytest.raises(HostSpecError, match=r"no profile '9g\.99gb'"):
        install(bad)
    bad.write_text(
        "gpus:\n  - product: A100-40GB\n    mig: enabled\n    mig_instances: [{profile: 7g.40gb}, {profile: 1g.5gb}]\n"
    )
    with pytest.raises(HostSpecError, match="do not fit"):
        install(bad, state_path=tmp_path / "x.json")
    bad.write_text("gpus: []\nfoo: 1\n")
    with pytest.raises(HostSpecError, match="foo"):
        install(bad)
    with pytest.raises(HostSpecError, match=r"bundled: .*h100-8x"):
        install("no-such-spec")


def test_bundled_specs_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_SIM_STATE_DIR", str(tmp_path))
    names = bundled_specs()
    assert {"h100-8x", "l4-4x", "a100-40gb-2x-mig", "a16-vgpu", "ecc-faulty", "a100-80gb-4x", "h200-8x"} <= set(names)
    try:
        for name in names:
            host = install(name)
            assert host.state_path == tmp_path / f"{name}.state.json" and host.state_path.exists()
    finally:
        uninstall()
    assert default_state_path(tmp_path / "x.yaml", None) == tmp_path / "x.yaml.state.json"
    monkeypatch.delenv("GPUFABRIC_SIM_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_path(None, "h100-8x") == tmp_path / "xdg/gpufabric/sim/h100-8x.state.json"


def test_uninitialized_and_function_not_found(sim: Sim) -> None:
    sim("l4-4x")
    with pytest.raises(N.NVMLError_FunctionNotFound):
        N.nvmlDeviceGetClockInfo(N.nvmlDeviceGetHandleByIndex(0), 0)
    N.nvmlShutdown()
    with pytest.raises(N.NVMLError_Uninitialized):
        N.nvmlDeviceGetCount()
    N.nvmlInit()
