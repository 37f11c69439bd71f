"""Shared builders for MIG tests: an A100-SXM4-40GB profile table as NVML reports it."""

from __future__ import annotations

from pathlib import Path

from agent.mig.model import GiProfile, ObservedCi, ObservedGi, ObservedGpu
from drivers.contract.inventory import Placement


def _profile(
    name: str, pid: int, index: int, slices: int, mem: int, max_n: int, starts: list[int], size: int
) -> GiProfile:
    return GiProfile(
        name=name,
        profile_id=pid,
        profile_index=index,
        slices=slices,
        memory_mib=mem,
        max_instances=max_n,
        placements=[Placement(start=s, size=size) for s in starts],
    )


# NVIDIA A100-SXM4-40GB (nvidia-smi mig -lgip / -lgipp): ids differ from indexes on purpose.
A100_40GB = [
    _profile("1g.5gb", 19, 0, 1, 4864, 7, [0, 1, 2, 3, 4, 5, 6], 1),
    _profile("1g.5gb+me", 20, 7, 1, 4864, 1, [0, 1, 2, 3, 4, 5, 6], 1),
    _profile("1g.10gb", 15, 9, 1, 9856, 4, [0, 2, 4, 6], 2),
    _profile("2g.10gb", 14, 1, 2, 9856, 3, [0, 2, 4], 2),
    _profile("3g.20gb", 9, 2, 3, 19968, 2, [0, 4], 4),
    _profile("4g.20gb", 5, 3, 4, 19968, 1, [0], 4),
    _profile("7g.40gb", 0, 4, 7, 40192, 1, [0], 8),
]
A100_ID = "0x20B010DE"
PROFILE = {p.name: p for p in A100_40GB}

REPO_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
MIG_PARTED_SAMPLES = TESTDATA / "mig-parted"


def instance(gi_id: int, profile: str, start: int, *, pids: tuple[int, ...] = (), ci: bool = True) -> ObservedGi:
    p = PROFILE[profile]
    size = p.placements[0].size
    cis = [ObservedCi(id=0, profile_id=p.slices - 1, slices=p.slices)] if ci else []
    return ObservedGi(
        gpu_instance_id=gi_id,
        profile=profile,
        profile_id=p.profile_id,
        placement=Placement(start=start, size=size),
        compute_instances=cis,
        processes=list(pids),
    )


def a100(index: int = 0, *instances: ObservedGi, mig: bool = True, pending: bool | None = None) -> ObservedGpu:
    return ObservedGpu(
        index=index,
        name="NVIDIA A100-SXM4-40GB",
        pci_device_id=A100_ID,
        mig_capable=True,
        mig_current=mig,
        mig_pending=mig if pending is None else pending,
        profiles=A100_40GB if mig else None,
        instances=list(instances),
    )
