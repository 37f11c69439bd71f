"""MIG behaviour for every MIG-capable product, through the pynvml API only."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pynvml as N
import pytest

from drivers.gpus.catalog import load_catalog
from tests.support.nvml import Sim, mig_spec

CAT = load_catalog()
MIG_MODELS = [p.model for p in CAT.mig_capable()]


def _placements(h: object, profile_id: int) -> list[tuple[int, int]]:
    count = ctypes.c_uint(0)
    N.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
    arr = (N.c_nvmlGpuInstancePlacement_t * count.value)()
    N.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
    return [(p.start, p.size) for p in arr[: count.value]]


@pytest.mark.parametrize("model", MIG_MODELS)
def test_profile_info(sim: Sim, model: str) -> None:
    sim(mig_spec(model))
    prod = CAT.product(model)
    h = N.nvmlDeviceGetHandleByIndex(0)
    seen = []
    for index in range(N.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = N.nvmlDeviceGetGpuInstanceProfileInfo(h, index)
        except N.NVMLError_NotSupported:
            continue
        p = prod.profile_by_index(index)
        assert p is not None
        assert (info.id, info.sliceCount, info.memorySizeMB, info.multiprocessorCount) == (
            p.profile_id,
            p.slices,
            p.memory_mib,
            p.sm_count,
        )
        assert info.instanceCount == p.max_instances and info.isP2pSupported == 0
        assert info.name == f"MIG {p.name}"
        by_id = N.nvmlDeviceGetGpuInstanceProfileInfoById(h, p.profile_id)
        assert by_id.memorySizeMB == p.memory_mib and by_id.copyEngineCount == p.copy_engines
        v1 = N.nvmlDeviceGetGpuInstanceProfileInfo(h, index, version=1)
        assert v1.id == p.profile_id
        assert _placements(h, p.profile_id) == list(p.placements)
        seen.append(p.name)
    assert sorted(seen) == sorted(p.name for p in prod.mig_profiles)
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlDeviceGetGpuInstanceProfileInfo(h, N.NVML_GPU_INSTANCE_PROFILE_COUNT)


@pytest.mark.parametrize("model", MIG_MODELS)
def test_default_placement_until_full(sim: Sim, model: str) -> None:
    sim(mig_spec(model))
    prod = CAT.product(model)
    h = N.nvmlDeviceGetHandleByIndex(0)
    small = prod.profile_by_index(0)
    assert small is not None
    assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, small.profile_id) == small.max_instances
    gis = [N.nvmlDeviceCreateGpuInstance(h, small.profile_id) for _ in range(small.max_instances)]
    starts = [N.nvmlGpuInstanceGetInfo(g).placement.start for g in gis]
    assert sorted(starts) == [s for s, _ in small.placements]
    if prod.memory_slices == 8:
        assert starts == [6, 4, 5, 0, 1, 2, 3]
        assert [N.nvmlGpuInstanceGetInfo(g).id for g in gis] == [13, 11, 12, 7, 8, 9, 10]
    with pytest.raises(N.NVMLError_InsufficientResources):
        N.nvmlDeviceCreateGpuInstance(h, small.profile_id)
    assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, small.profile_id) == 0
    count = ctypes.c_uint(small.max_instances)
    arr = (N.c_nvmlGpuInstance_t * small.max_instances)()
    N.nvmlDeviceGetGpuInstances(h, small.profile_id, arr, ctypes.byref(count))
    assert count.value == small.max_instances


@pytest.mark.parametrize("model", MIG_MODELS)
def test_overlap_and_me_cap(sim: Sim, model: str) -> None:
    sim(mig_spec(model))
    prod = CAT.product(model)
    h = N.nvmlDeviceGetHandleByIndex(0)
    big = max(prod.mig_profiles, key=lambda p: p.slices)
    small = prod.profile_by_index(0)
    assert small is not None
    N.nvmlDeviceCreateGpuInstanceWithPlacement(h, small.profile_id, N.c_nvmlGpuInstancePlacement_t(0, 1))
    with pytest.raises(N.NVMLError_InsufficientResources):
        N.nvmlDeviceCreateGpuInstanceWithPlacement(h, small.profile_id, N.c_nvmlGpuInstancePlacement_t(0, 1))
    with pytest.raises(N.NVMLError_InsufficientResources):
        N.nvmlDeviceCreateGpuInstanceWithPlacement(
            h, big.profile_id, N.c_nvmlGpuInstancePlacement_t(*big.placements[0])
        )
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlDeviceCreateGpuInstanceWithPlacement(h, small.profile_id, N.c_nvmlGpuInstancePlacement_t(1, 3))
    me = prod.profile_by_index(N.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1)
    assert me is not None and me.max_instances == 1
    N.nvmlDeviceCreateGpuInstance(h, me.profile_id)
    with pytest.raises(N.NVMLError_InsufficientResources):
        N.nvmlDeviceCreateGpuInstance(h, me.profile_id)


def test_a100_ordering_failure_and_fix(sim: Sim) -> None:
    sim(mig_spec("A100-40GB"))
    h = N.nvmlDeviceGetHandleByIndex(0)
    ids = [N.nvmlGpuInstanceGetInfo(N.nvmlDeviceCreateGpuInstance(h, p)).id for p in (19, 19, 14)]
    assert ids == [13, 11, 3]
    with pytest.raises(N.NVMLError_InsufficientResources):
        N.nvmlDeviceCreateGpuInstance(h, 9)
    for pid in (19, 14):
        count = ctypes.c_uint(7)
        arr = (N.c_nvmlGpuInstance_t * 7)()
        N.nvmlDeviceGetGpuInstances(h, pid, arr, ctypes.byref(count))
        for g in arr[: count.value]:
            N.nvmlGpuInstanceDestroy(g)
    got = [N.nvmlGpuInstanceGetInfo(N.nvmlDeviceCreateGpuInstance(h, p)).placement for p in (9, 19, 14, 19)]
    assert [(p.start, p.size) for p in got] == [(4, 4), (0, 1), (2, 2), (1, 1)]


@pytest.mark.parametrize("model", MIG_MODELS)
def test_not_supported_with_mig_off(sim: Sim, model: str) -> None:
    sim({"gpus": [{"product": model, "mig": "disabled"}]})
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceGetMigMode(h) == [0, 0]
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetGpuInstanceProfileInfo(h, 0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceCreateGpuInstance(h, 19)
    assert N.nvmlDeviceGetMaxMigDeviceCount(h) == 0
    assert N.nvmlDeviceGetUtilizationRates(h).gpu == 0


@pytest.mark.parametrize("model", ["L4", "T4", "A16", "A10", "L40S", "V100-32GB", "A40"])
def test_not_supported_on_non_mig_products(sim: Sim, model: str) -> None:
    sim({"gpus": [{"product": model}]})
    h = N.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetMigMode(h)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceSetMigMode(h, 1)


@pytest.mark.parametrize("model", MIG_MODELS)
def test_pending_mig_mode_until_reset(sim: Sim, model: str) -> None:
    host = sim({"gpus": [{"product": model, "mig": "disabled"}]})
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceSetMigMode(h, 1) == N.NVML_ERROR_RESET_REQUIRED
    assert N.nvmlDeviceGetMigMode(h) == [0, 1]
    host.reset_gpu(0)
    assert N.nvmlDeviceGetMigMode(h) == [1, 1]
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetUtilizationRates(h)


def test_immediate_mig_mode_and_in_use(sim: Sim) -> None:
    host = sim(
        {
            "mig_reset_required": False,
            "gpus": [{"product": "H100-80GB", "processes": [{"pid": 7, "used_memory_mib": 10}]}],
        }
    )
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceSetMigMode(h, 1) == N.NVML_ERROR_IN_USE
    assert N.nvmlDeviceGetMigMode(h) == [0, 1]
    from drivers.nvml.sim.host import SimulatorError

    with pytest.raises(SimulatorError, match="processes 7"):
        host.reset_gpu(0)
    host.remove_process(7)
    assert N.nvmlDeviceSetMigMode(h, 1) == N.NVML_SUCCESS  # already pending; idle now
    host.reset_gpu(0)
    assert N.nvmlDeviceGetMigMode(h) == [1, 1]
    assert N.nvmlDeviceSetMigMode(h, 0) == N.NVML_SUCCESS
    assert N.nvmlDeviceGetMigMode(h) == [0, 0]


@pytest.mark.parametrize("model", MIG_MODELS)
def test_compute_instances_and_in_use_destroy(sim: Sim, model: str) -> None:
    sim(mig_spec(model))
    prod = CAT.product(model)
    h = N.nvmlDeviceGetHandleByIndex(0)
    big = max(prod.mig_profiles, key=lambda p: p.slices)
    gi = N.nvmlDeviceCreateGpuInstance(h, big.profile_id)
    profiles = prod.ci_profiles_for(big)
    full = profiles[-1]
    info = N.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, full.index, N.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    assert info.multiprocessorCount == big.sm_count and info.name == f"MIG {big.name}"
    one = profiles[0]
    assert N.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, one.index) == one.max_instances
    ci = N.nvmlGpuInstanceCreateComputeInstance(gi, one.index)
    ci_info = N.nvmlComputeInstanceGetInfo(ci)
    assert (ci_info.id, ci_info.profileId, ci_info.placement.start) == (0, one.index, 0)
    with pytest.raises(N.NVMLError_InUse):
        N.nvmlGpuInstanceDestroy(gi)
    mig = N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert N.nvmlDeviceIsMigDeviceHandle(mig).value == 1
    assert N.nvmlDeviceGetUUID(mig).startswith("MIG-")
    assert N.nvmlDeviceGetGpuInstanceId(mig) == N.nvmlGpuInstanceGetInfo(gi).id
    assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)) == 0
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetMigDeviceHandleByIndex(h, 1)
    N.nvmlComputeInstanceDestroy(ci)
    N.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlGpuInstanceGetInfo(gi)


def test_no_permission_when_not_root(sim: Sim) -> None:
    host = sim(
        {"root": False, "gpus": [{"product": "A100-40GB", "mig": "enabled", "mig_instances": [{"profile": "1g.5gb"}]}]}
    )
    h = N.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(N.NVMLError_NoPermission):
        N.nvmlDeviceSetMigMode(h, 0)
    with pytest.raises(N.NVMLError_NoPermission):
        N.nvmlDeviceCreateGpuInstance(h, 19)
    gi = N.nvmlDeviceGetGpuInstanceById(h, 13)
    with pytest.raises(N.NVMLError_NoPermission):
        N.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(N.NVMLError_NoPermission):
        N.nvmlDeviceSetComputeMode(N.nvmlDeviceGetMigDeviceHandleByIndex(h, 0), 3)
    assert host.mutation_log == []


def test_persistence_across_reinstall(sim: Sim, tmp_path: Path) -> None:
    state = tmp_path / "persist.json"
    sim("a100-40gb-2x-mig", state_path=state)
    h = N.nvmlDeviceGetHandleByIndex(0)
    uuid = N.nvmlDeviceGetUUID(h)
    N.nvmlDeviceCreateGpuInstance(h, 19)
    migs = [N.nvmlDeviceGetUUID(N.nvmlDeviceGetMigDeviceHandleByIndex(h, i)) for i in range(3)]
    sim("a100-40gb-2x-mig", state_path=state)
    h = N.nvmlDeviceGetHandleByIndex(0)
    assert N.nvmlDeviceGetUUID(h) == uuid
    assert N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 19) == 0
    assert [N.nvmlDeviceGetUUID(N.nvmlDeviceGetMigDeviceHandleByIndex(h, i)) for i in range(3)] == migs
    assert N.nvmlDeviceGetUUID(N.nvmlDeviceGetHandleByUUID(migs[1])) == migs[1]


def test_incompatible_state_discarded(sim: Sim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "s.json"
    sim(mig_spec("A100-40GB", mig_instances=[{"profile": "7g.40gb"}]), state_path=state)
    sim({"gpus": [{"product": "A100-40GB", "count": 2, "mig": "enabled"}]}, state_path=state)
    assert "discarding simulator state" in caplog.text
    assert N.nvmlDeviceGetMaxMigDeviceCount(N.nvmlDeviceGetHandleByIndex(0)) == 7
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetMigDeviceHandleByIndex(N.nvmlDeviceGetHandleByIndex(0), 0)
