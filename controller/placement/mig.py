"""MIG geometry for placement: which GPU-instance placements are free and how much a new instance fragments.

Profile tables come from the GPU catalog (``drivers.nvml.catalog``), the same facts the simulated NVML uses.
A device's MIG *layout* is a sorted tuple of ``(start, size, profile)`` for every GPU instance on it, claimed
or not; everything here is a pure function of ``(model, layout)`` and memoised, so the hot path pays for a
layout only the first time any GPU is in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from drivers.nvml.catalog import load_catalog

Layout = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True, slots=True)
class MigProfileGeom:
    name: str
    profile_id: int
    slices: int
    memory_mib: int
    max_instances: int
    placements: tuple[tuple[int, int], ...]

    @property
    def is_variant(self) -> bool:
        """``+me`` style variants share geometry with their base profile and are not weighed separately."""
        return "+" in self.name or "-" in self.name


@dataclass(frozen=True, slots=True, eq=False)
class MigGeometry:
    model: str
    memory_slices: int
    compute_slices: int
    profiles: dict[str, MigProfileGeom]

    def profile(self, name: str) -> MigProfileGeom | None:
        return self.profiles.get(name.removeprefix("MIG ").strip())


@cache
def geometry(model: str) -> MigGeometry | None:
    """The MIG geometry of a GPU model (short name or NVML name); ``None`` if unknown or not MIG-capable."""
    try:
        product = load_catalog().product(model)
    except KeyError:
        return None
    if not product.mig_capable:
        return None
    profiles = {
        p.name: MigProfileGeom(p.name, p.profile_id, p.slices, p.memory_mib, p.max_instances, tuple(p.placements))
        for p in product.mig_profiles
    }
    compute = max(p.slices for p in profiles.values())
    return MigGeometry(product.model, product.memory_slices, compute, profiles)


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


@lru_cache(maxsize=1 << 16)
def _occupancy(model: str, layout: Layout) -> tuple[int, int, dict[str, int]]:
    geom = geometry(model)
    mask = 0
    compute = 0
    counts: dict[str, int] = {}
    for start, size, profile in layout:
        mask |= _mask(start, size)
        p = geom.profile(profile) if geom else None
        compute += p.slices if p else size
        counts[profile] = counts.get(profile, 0) + 1
    return mask, compute, counts


@lru_cache(maxsize=1 << 16)
def free_placements(model: str, layout: Layout, profile: str) -> tuple[tuple[int, int], ...]:
    """Placements where ``profile`` could be created now (memory slices free, compute and instance caps)."""
    geom = geometry(model)
    p = geom.profile(profile) if geom else None
    if geom is None or p is None:
        return ()
    mask, compute, counts = _occupancy(model, layout)
    if compute + p.slices > geom.compute_slices or counts.get(p.name, 0) >= p.max_instances:
        return ()
    return tuple((s, n) for s, n in p.placements if not mask & _mask(s, n))


def add(layout: Layout, start: int, size: int, profile: str) -> Layout:
    return tuple(sorted((*layout, (start, size, profile))))


def remove(layout: Layout, start: int, size: int, profile: str) -> Layout:
    out = list(layout)
    out.remove((start, size, profile))
    return tuple(out)


@lru_cache(maxsize=1 << 16)
def creatable(model: str, layout: Layout, profile: str) -> int:
    """How many more instances of ``profile`` fit on this GPU (greedy, which is exact for one profile)."""
    n = 0
    while True:
        free = free_placements(model, layout, profile)
        if not free:
            return n
        s, size = free[0]
        layout = add(layout, s, size, profile)
        n += 1


@lru_cache(maxsize=1 << 16)
def potential(model: str, layout: Layout) -> int:
    """How much the GPU can still take: the sum over base profiles of compute slices x free placements.

    Creating an instance lowers the potential by the placements it blocks, weighted by their size, so the
    placement with the smallest drop is the one that keeps the most (and the largest) future options open.
    """
    geom = geometry(model)
    if geom is None:
        return 0
    return sum(
        p.slices * len(free_placements(model, layout, p.name)) for p in geom.profiles.values() if not p.is_variant
    )


def best_placement(model: str, layout: Layout, profile: str) -> tuple[int, int, int] | None:
    """The free placement of ``profile`` that fragments least: ``(loss, start, size)`` or ``None``."""
    free = free_placements(model, layout, profile)
    if not free:
        return None
    before = potential(model, layout)
    best: tuple[int, int, int] | None = None
    for s, size in free:
        loss = before - potential(model, add(layout, s, size, profile))
        cand = (loss, -s, size)
        if best is None or cand < best:
            best = cand
    assert best is not None
    return best[0], -best[1], best[2]


def first_placement(model: str, layout: Layout, profile: str) -> tuple[int, int] | None:
    """First-fit: the lowest free start. Used as the baseline in the packing benchmark."""
    free = free_placements(model, layout, profile)
    return free[0] if free else None
