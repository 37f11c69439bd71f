"""The one MIG scorer: which GPU-instance placements are free on a GPU and what a new instance costs its future.

Both sides decide with it: the controller's placement engine, where an instance is created for a lease
(``host_cost`` through ``controller.placement.mig.HostPlaces``), and the node agent's MIG planner, where the
instances of an operator's mig-parted config go (``layout_cost``, through ``agent.mig.search``). One GPU, one
request: both pick the same placement (``tests/agent/mig/test_shared_scorer.py``). See docs/placement.md.

A GPU is named by its *model*: a catalog model name (``"A100-40GB"``, resolved with ``drivers.gpus.mig.geometry``;
the controller) or a ``MigGeometry`` itself (``MigGeometry.from_profile_table``, the table NVML reports; the
agent). A device's MIG *layout* is a sorted tuple of ``(start, size, profile)`` for every GPU instance on it,
claimed or not. Every function here is a pure function of ``(model, layout)`` and memoised, so the controller's
hot path pays for a layout only the first time any GPU is in it; geometries are hashed by identity and interned,
so an agent's table hits the same entries on every planning run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

from drivers.gpus.mig import MigGeometry, geometry

Layout = tuple[tuple[int, int, str], ...]
GpuModel = str | MigGeometry
"""A catalog model name or a geometry (see the module's docstring)."""

Places = Callable[[str], int]
"""``profile -> places`` of a profile beyond the GPU being scored (``host_cost``)."""


def geometry_of(model: GpuModel) -> MigGeometry | None:
    return model if isinstance(model, MigGeometry) else geometry(model)


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


@lru_cache(maxsize=1 << 16)
def _occupancy(model: GpuModel, layout: Layout) -> tuple[int, int, dict[str, int]]:
    geom = geometry_of(model)
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
def free_placements(model: GpuModel, layout: Layout, profile: str) -> tuple[tuple[int, int], ...]:
    """Placements where ``profile`` could be created now (memory slices free, compute and instance caps)."""
    geom = geometry_of(model)
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
def creatable(model: GpuModel, layout: Layout, profile: str) -> int:
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
def potential(model: GpuModel, layout: Layout) -> int:
    """How much the GPU can still take: the sum over base profiles of compute slices x instances still creatable.

    ``creatable`` (not merely free placements) so that two overlapping placements of a profile count once: on an
    A100 a 1g.10gb at 2 blocks the 2g.10gb at 2 and nothing else, whatever its neighbours.
    """
    geom = geometry_of(model)
    if geom is None:
        return 0
    return sum(p.slices * creatable(model, layout, p.name) for p in geom.profiles.values() if not p.is_variant)


@lru_cache(maxsize=1 << 16)
def dead_slices(model: GpuModel, layout: Layout) -> int:
    """Free memory slices that no placement of any profile can use any more (until something is destroyed).

    E.g. on an A100 a 1g.5gb at slice 6 leaves slice 7 free but unusable: only 1g.10gb at 6, 3g at 4 and 7g
    reach it, and each of them overlaps slice 6.
    """
    geom = geometry_of(model)
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
def _cost_scales(model: GpuModel) -> tuple[int, int]:
    """Multipliers that make ``placement_cost`` lexicographic: (empty GPU opened, dead slices, potential lost)."""
    geom = geometry_of(model)
    per_dead = potential(model, ()) + 1
    per_empty = per_dead * ((geom.memory_slices if geom else 8) + 1)
    return per_empty, per_dead


@lru_cache(maxsize=1 << 16)
def placement_cost(model: GpuModel, layout: Layout, profile: str, start: int, size: int) -> int:
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
def _base_profiles(model: GpuModel) -> tuple[str, ...]:
    geom = geometry_of(model)
    return tuple(p.name for p in geom.profiles.values() if not p.is_variant) if geom else ()


@lru_cache(maxsize=1 << 16)
def last_places_taken(model: GpuModel, layout: Layout, profile: str, start: int, size: int) -> tuple[str, ...]:
    """Base profiles this GPU can create now and could not any more with ``profile`` at ``start``."""
    after = add(layout, start, size, profile)
    return tuple(q for q in _base_profiles(model) if creatable(model, layout, q) and not creatable(model, after, q))


@lru_cache(maxsize=1 << 16)
def _terms(model: GpuModel, layout: Layout, profile: str, start: int, size: int) -> tuple[int, tuple[str, ...]]:
    """``placement_cost`` and ``last_places_taken`` in one lookup (the hot path asks for both)."""
    return placement_cost(model, layout, profile, start, size), last_places_taken(model, layout, profile, start, size)


def _nowhere(profile: str) -> int:
    return 0


def host_cost(model: GpuModel, layout: Layout, profile: str, start: int, size: int, outside: Places = _nowhere) -> int:
    """The scorer: ``placement_cost``, preceded by the profiles the placement leaves without any place.

    ``outside(profile)`` counts the profile's places beyond this GPU (``controller.placement.mig.HostPlaces``; none
    by default: the GPU alone). Keeping at least one place for every profile comes first, even over opening an
    empty GPU: the request that finds no place for its profile is the one refused.
    """
    cost, taken = _terms(model, layout, profile, start, size)
    if taken:
        cost += sum(1 for q in taken if not outside(q)) * 2 * _cost_scales(model)[0]
    return cost


def best_placement(
    model: GpuModel, layout: Layout, profile: str, outside: Places = _nowhere
) -> tuple[int, int, int] | None:
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


def first_placement(model: GpuModel, layout: Layout, profile: str) -> tuple[int, int] | None:
    """First-fit: the lowest free start. Used as the baseline in the packing benchmark."""
    free = free_placements(model, layout, profile)
    return free[0] if free else None


@lru_cache(maxsize=1 << 16)
def layout_cost(model: GpuModel, layout: Layout) -> tuple[int, int, int]:
    """What a finished layout leaves the GPU, lower is better: ``host_cost``'s terms for the GPU alone, counted on
    the whole layout rather than on one more instance. The agent ranks complete candidate layouts with it.

    1. base profiles the GPU can no longer create at all;
    2. dead memory slices (``dead_slices``);
    3. minus the ``potential`` left.

    For one instance added to a fixed layout this is ``host_cost`` with nothing outside the GPU, up to a constant:
    every term only grows as instances are added, so the placement that adds least to each term ranks the same
    way (opening an empty GPU costs every candidate alike). Only the tie-break is the caller's
    (``best_placement``: the highest start).
    """
    lost = sum(1 for q in _base_profiles(model) if not creatable(model, layout, q))
    return lost, dead_slices(model, layout), -potential(model, layout)


def highest_starts_first(layout: Layout) -> tuple[tuple[int, int, str], ...]:
    """The tie-break between layouts of equal ``layout_cost``, a total order: the layout whose instances start
    highest sorts first (``best_placement``'s "highest start" for one instance), so the same inputs always give
    the same layout."""
    return tuple(sorted((-start, -size, profile) for start, size, profile in layout))
