"""MIG geometry rules of the simulator: placements, default placement order, GI/CI ids.

Default placement (no placement given) follows what drivers were observed to do: for each placement
size a fixed preference order of start slices, high half first (1-slice: 6,4,5,0,1,2,3 as seen on
H100; 2-slice: 4,0,2,6 as seen for three 1g.24gb on GH200; 4-slice: 4,0 as in the A100 user-guide
example `-cgi 9,19,14,19`). The first free placement in that order is taken.
GI ids are derived from the placement like the drivers do (7g -> 0; 4-slice at 4 -> 1, at 0 -> 2;
2-slice -> 3 + start/2; 1-slice -> 7 + start; A30: 4 -> 0, 2 -> 1 + start/2, 1 -> 3 + start).
"""

from __future__ import annotations

import uuid

from drivers.gpus.catalog import CiProfile, MigProfile, Product
from drivers.nvml.sim.codes import INSUFFICIENT_RESOURCES, INVALID_ARGUMENT, NvmlFail
from drivers.nvml.sim.state import CiState, GiState, GpuState

_ORDER: dict[int, dict[int, list[int]]] = {
    8: {1: [6, 4, 5, 0, 1, 2, 3], 2: [4, 0, 2, 6], 4: [4, 0], 8: [0]},
    4: {1: [2, 3, 0, 1], 2: [2, 0], 4: [0]},
}
_MIG_UUID_NS = uuid.UUID("0c7f6a2e-41d5-4f38-9b7a-2d9e6c1a5b83")


def ordered_placements(product: Product, profile: MigProfile) -> list[tuple[int, int]]:
    prefs = _ORDER.get(product.memory_slices, {}).get(profile.placement_size, [])

    def key(p: tuple[int, int]) -> tuple[int, int]:
        return (prefs.index(p[0]), 0) if p[0] in prefs else (len(prefs), -p[0])

    return sorted(profile.placements, key=key)


def used_slices(gpu: GpuState) -> set[int]:
    return {s for g in gpu.gis for s in range(g.start, g.start + g.size)}


def _fits(gpu: GpuState, start: int, size: int) -> bool:
    return not (set(range(start, start + size)) & used_slices(gpu))


def gi_id_for(product: Product, gpu: GpuState, start: int, size: int) -> int:
    taken = {g.id for g in gpu.gis}
    want: int | None = None
    if product.memory_slices == 8:
        want = {8: 0, 4: 1 if start == 4 else 2, 2: 3 + start // 2, 1: 7 + start}.get(size)
    elif product.memory_slices == 4:
        want = {4: 0, 2: 1 + start // 2, 1: 3 + start}.get(size)
    if want is not None and want not in taken:
        return want
    return next(i for i in range(1, 64) if i not in taken)


def pick_gi_placement(product: Product, gpu: GpuState, profile: MigProfile) -> tuple[int, int]:
    if sum(1 for g in gpu.gis if g.profile_id == profile.profile_id) >= profile.max_instances:
        raise NvmlFail(INSUFFICIENT_RESOURCES)
    for start, size in ordered_placements(product, profile):
        if _fits(gpu, start, size):
            return start, size
    raise NvmlFail(INSUFFICIENT_RESOURCES)


def check_gi_placement(product: Product, gpu: GpuState, profile: MigProfile, start: int, size: int) -> None:
    if (start, size) not in profile.placements:
        raise NvmlFail(INVALID_ARGUMENT)
    if sum(1 for g in gpu.gis if g.profile_id == profile.profile_id) >= profile.max_instances:
        raise NvmlFail(INSUFFICIENT_RESOURCES)
    if not _fits(gpu, start, size):
        raise NvmlFail(INSUFFICIENT_RESOURCES)


def new_gi(product: Product, gpu: GpuState, profile: MigProfile, start: int, size: int) -> GiState:
    gi = GiState(id=gi_id_for(product, gpu, start, size), profile_id=profile.profile_id, start=start, size=size)
    gpu.gis.append(gi)
    gpu.gis.sort(key=lambda g: g.id)
    return gi


def remaining_gi_capacity(product: Product, gpu: GpuState, profile: MigProfile) -> int:
    trial = gpu.model_copy(deep=True)
    n = 0
    while True:
        try:
            start, size = pick_gi_placement(product, trial, profile)
        except NvmlFail:
            return n
        new_gi(product, trial, profile, start, size)
        n += 1


# ---- compute instances ----


def ci_placements(ci: CiProfile) -> list[tuple[int, int]]:
    return [(i * ci.slices, ci.slices) for i in range(ci.max_instances)]


def _ci_fits(gi: GiState, start: int, size: int) -> bool:
    used = {s for c in gi.cis for s in range(c.start, c.start + c.size)}
    return not (set(range(start, start + size)) & used)


def pick_ci_placement(gi: GiState, ci: CiProfile, start: int | None = None) -> tuple[int, int]:
    if sum(1 for c in gi.cis if c.profile_id == ci.index) >= ci.max_instances:
        raise NvmlFail(INSUFFICIENT_RESOURCES)
    if start is not None:
        if (start, ci.slices) not in ci_placements(ci):
            raise NvmlFail(INVALID_ARGUMENT)
        if not _ci_fits(gi, start, ci.slices):
            raise NvmlFail(INSUFFICIENT_RESOURCES)
        return start, ci.slices
    for s, size in ci_placements(ci):
        if _ci_fits(gi, s, size):
            return s, size
    raise NvmlFail(INSUFFICIENT_RESOURCES)


def remaining_ci_capacity(gi: GiState, ci: CiProfile) -> int:
    trial = gi.model_copy(deep=True)
    n = 0
    while True:
        try:
            s, size = pick_ci_placement(trial, ci)
        except NvmlFail:
            return n
        trial.cis.append(CiState(id=1000 + n, profile_id=ci.index, start=s, size=size, uuid=""))
        n += 1


def new_ci(gi: GiState, ci: CiProfile, start: int, size: int, hostname: str, gpu_index: int, serial: int) -> CiState:
    taken = {c.id for c in gi.cis}
    cid = next(i for i in range(64) if i not in taken)
    u = uuid.uuid5(_MIG_UUID_NS, f"{hostname}/{gpu_index}/{gi.id}/{cid}/{serial}")
    state = CiState(id=cid, profile_id=ci.index, start=start, size=size, uuid=f"MIG-{u}")
    gi.cis.append(state)
    gi.cis.sort(key=lambda c: c.id)
    return state


def full_ci_profile(product: Product, gi_profile: MigProfile) -> CiProfile | None:
    """The CI profile spanning the whole GI (what `nvidia-smi mig -cgi ... -C` creates)."""
    cands = [c for c in product.ci_profiles_for(gi_profile) if c.slices >= gi_profile.slices]
    return cands[-1] if cands else None
