"""MIG geometry for placement, and the one MIG scorer: which GPU-instance placements are free and what a new
instance costs the fleet's future (``host_cost``; the agent creates instances where it chose, see docs/placement.md).

Profile tables come from the GPU catalog through ``drivers.gpus.mig.geometry`` (the same facts the simulated NVML
uses).
A device's MIG *layout* is a sorted tuple of ``(start, size, profile)`` for every GPU instance on it, claimed
or not; every function here is a pure function of ``(model, layout)`` and memoised, so the hot path pays for a
layout only the first time any GPU is in it. Only ``HostPlaces`` looks beyond one GPU (the host's other GPUs and,
through the engine's index, other hosts), and only when a placement would take a GPU's last place of a profile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, lru_cache

from drivers.gpus.mig import geometry

Layout = tuple[tuple[int, int, str], ...]


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
    """How much the GPU can still take: the sum over base profiles of compute slices x instances still creatable.

    ``creatable`` (not merely free placements) so that two overlapping placements of a profile count once: on an
    A100 a 1g.10gb at 2 blocks the 2g.10gb at 2 and nothing else, whatever its neighbours.
    """
    geom = geometry(model)
    if geom is None:
        return 0
    return sum(p.slices * creatable(model, layout, p.name) for p in geom.profiles.values() if not p.is_variant)


@lru_cache(maxsize=1 << 16)
def dead_slices(model: str, layout: Layout) -> int:
    """Free memory slices that no placement of any profile can use any more (until something is destroyed).

    E.g. on an A100 a 1g.5gb at slice 6 leaves slice 7 free but unusable: only 1g.10gb at 6, 3g at 4 and 7g
    reach it, and each of them overlaps slice 6.
    """
    geom = geometry(model)
    if geom is None:
        return 0
    mask = _occupancy(model, layout)[0]
    usable = 0
    for p in geom.profiles.values():
        if not p.is_variant:
            for s, n in free_placements(model, layout, p.name):
                usable |= _mask(s, n)
    return sum(1 for m in range(geom.memory_slices) if not (mask | usable) >> m & 1)


@cache
def _cost_scales(model: str) -> tuple[int, int]:
    """Multipliers that make ``placement_cost`` lexicographic: (empty GPU opened, dead slices, potential lost)."""
    geom = geometry(model)
    per_dead = potential(model, ()) + 1
    per_empty = per_dead * ((geom.memory_slices if geom else 8) + 1)
    return per_empty, per_dead


@lru_cache(maxsize=1 << 16)
def placement_cost(model: str, layout: Layout, profile: str, start: int, size: int) -> int:
    """What creating ``profile`` at ``start`` costs the GPU's future capacity (lower is better).

    Lexicographic, encoded in one integer so the host weigher can compare hosts with it:

    1. opening an empty GPU (best fit: a 7g needs a whole GPU, so small instances go where something already is);
    2. memory slices the new instance leaves dead (free, but usable by no placement: wasted until a release);
    3. the drop in ``potential`` (compute slices x instances still creatable, summed over profiles): the
       placement that keeps the most and the largest instances creatable, e.g. a small instance in the half
       that already holds small ones rather than in the free half a 3g/4g still needs.
    """
    per_empty, per_dead = _cost_scales(model)
    after = add(layout, start, size, profile)
    dead = max(0, dead_slices(model, after) - dead_slices(model, layout))
    loss = max(0, potential(model, layout) - potential(model, after))
    return (per_empty if not layout else 0) + dead * per_dead + loss


@cache
def _base_profiles(model: str) -> tuple[str, ...]:
    geom = geometry(model)
    return tuple(p.name for p in geom.profiles.values() if not p.is_variant) if geom else ()


@lru_cache(maxsize=1 << 16)
def last_places_taken(model: str, layout: Layout, profile: str, start: int, size: int) -> tuple[str, ...]:
    """Base profiles this GPU can create now and could not any more with ``profile`` at ``start``."""
    after = add(layout, start, size, profile)
    return tuple(q for q in _base_profiles(model) if creatable(model, layout, q) and not creatable(model, after, q))


Places = Callable[[str], int]


class HostPlaces:
    """Where a host's profiles can still be created, counted on first use: its GPUs (``gpus``: model and layout
    each) plus, through ``elsewhere(model, profile)``, whether another host can create the profile."""

    def __init__(self, gpus: Sequence[tuple[str, Layout]], elsewhere: Callable[[str, str], bool]) -> None:
        self.gpus = gpus
        self.elsewhere = elsewhere
        self._on_host: dict[tuple[str, str], int] = {}

    def _count(self, model: str, profile: str) -> int:
        n = self._on_host.get((model, profile))
        if n is None:
            n = self._on_host[(model, profile)] = sum(creatable(m, g, profile) for m, g in self.gpus if m == model)
        return n

    def outside(self, model: str, layout: Layout) -> Places:
        """``profile -> places`` beyond the GPU whose layout is ``layout`` (one of ``gpus``)."""

        seen: dict[str, int] = {}

        def places(profile: str) -> int:
            n = seen.get(profile)
            if n is None:
                n = self._count(model, profile) - creatable(model, layout, profile)
                n = seen[profile] = n if n else int(self.elsewhere(model, profile))
            return n

        return places


@lru_cache(maxsize=1 << 16)
def _terms(model: str, layout: Layout, profile: str, start: int, size: int) -> tuple[int, tuple[str, ...]]:
    """``placement_cost`` and ``last_places_taken`` in one lookup (the hot path asks for both)."""
    return placement_cost(model, layout, profile, start, size), last_places_taken(model, layout, profile, start, size)


def _nowhere(profile: str) -> int:
    return 0


def host_cost(model: str, layout: Layout, profile: str, start: int, size: int, outside: Places = _nowhere) -> int:
    """The scorer: ``placement_cost``, preceded by the profiles the placement leaves without any place.

    ``outside(profile)`` counts the profile's places beyond this GPU (``HostPlaces.outside``; none by default: the GPU
    alone). Keeping at least one place for every profile comes first, even over opening an empty GPU: the
    request that finds no place for its profile is the one refused.
    """
    cost, taken = _terms(model, layout, profile, start, size)
    if taken:
        cost += sum(1 for q in taken if not outside(q)) * 2 * _cost_scales(model)[0]
    return cost


def best_placement(model: str, layout: Layout, profile: str, outside: Places = _nowhere) -> tuple[int, int, int] | None:
    """The free placement of ``profile`` that costs least (``host_cost``): ``(cost, start, size)`` or ``None``.

    Ties go to the highest start, packing small instances towards the top so the low half (the only place of a
    4g on 8-slice GPUs) stays free longest.
    """
    best: tuple[int, int, int] | None = None
    for s, size in free_placements(model, layout, profile):
        cand = (host_cost(model, layout, profile, s, size, outside), -s, size)
        if best is None or cand < best:
            best = cand
    if best is None:
        return None
    return best[0], -best[1], best[2]


def first_placement(model: str, layout: Layout, profile: str) -> tuple[int, int] | None:
    """First-fit: the lowest free start. Used as the baseline in the packing benchmark."""
    free = free_placements(model, layout, profile)
    return free[0] if free else None
