"""Where GPU instances go on one GPU, decided with the one MIG scorer the controller places lease instances with
(``drivers.gpus.mig_score``): the exhaustive layout search for a config's instances the controller did not place,
the first-fit baseline it is measured against, and the placements the controller chose for lease instances
(created exactly there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from drivers.contract.inventory import Placement
from drivers.gpus.mig import MigGeometry, MigProfileGeom
from drivers.gpus.mig_score import Layout, add, free_placements, highest_starts_first, layout_cost

if TYPE_CHECKING:
    from agent.mig.model import GiProfile, ObservedGi

Rank = tuple[tuple[int, int, int], tuple[tuple[int, int, str], ...]]


def table_geometry(name: str, table: Iterable[GiProfile]) -> MigGeometry | None:
    """The scorer's geometry of a GPU from the profile table NVML reports for it (``None`` if it has none)."""
    return MigGeometry.from_profile_table(
        name,
        (
            MigProfileGeom(
                p.name,
                p.profile_id,
                p.slices,
                p.memory_mib,
                p.max_instances,
                tuple((pl.start, pl.size) for pl in p.placements),
            )
            for p in table
        ),
    )


def as_layout(instances: Iterable[tuple[str, Placement]]) -> Layout:
    """The scorer's layout of ``(profile name, placement)`` pairs."""
    return tuple(sorted((pl.start, pl.size, name) for name, pl in instances))


def rank(geom: MigGeometry | None, layout: Layout) -> Rank:
    """How good a complete layout is, lower first: the scorer's ``layout_cost`` (base profiles left without a
    place, dead slices, potential lost), then the highest starts (a total order: same inputs, same layout)."""
    return (layout_cost(geom, layout) if geom else (0, 0, 0)), highest_starts_first(layout)


def overlaps(a: Placement, b: Placement) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


def best_placements(
    to_place: Sequence[GiProfile],
    occupied: Sequence[tuple[str, Placement]],
    geom: MigGeometry | None,
) -> list[tuple[GiProfile, Placement]] | None:
    """Place every profile in ``to_place`` around the ``occupied`` (profile name, placement) instances.

    Exhaustive (a GPU has at most 8 memory slices): among all layouts that fit (free memory slices, compute slices,
    instance caps: the scorer's ``free_placements``), the one of lowest ``rank``: no profile left without a place,
    no dead slice, the most capacity still creatable, then the highest starts. For one instance this is the
    controller's ``best_placement`` on the same GPU. ``None`` when nothing fits.
    """
    if not to_place:
        return []
    if geom is None:
        return None
    # Big instances first prunes the search early; same-profile instances take increasing starts
    # so that permutations of identical instances are not explored twice.
    order = sorted(to_place, key=lambda p: (-max((pl.size for pl in p.placements), default=0), p.profile_id))
    best: tuple[Rank, tuple[tuple[GiProfile, Placement], ...]] | None = None
    chosen: list[tuple[GiProfile, Placement]] = []

    def search(i: int, layout: Layout) -> None:
        nonlocal best
        if i == len(order):
            key = rank(geom, layout)
            if best is None or key < best[0]:
                best = (key, tuple(chosen))
            return
        profile = order[i]
        floor = chosen[-1][1].start if i > 0 and order[i - 1].profile_id == profile.profile_id else -1
        for start, size in free_placements(geom, layout, profile.name):
            if start <= floor:
                continue
            chosen.append((profile, Placement(start=start, size=size)))
            search(i + 1, add(layout, start, size, profile.name))
            chosen.pop()

    search(0, as_layout(occupied))
    if best is None:
        return None
    return sorted(best[1], key=lambda pp: (pp[1].start, pp[0].profile_id))


def first_fit_placements(
    to_place: Sequence[GiProfile], occupied: Sequence[tuple[int, Placement]]
) -> list[tuple[GiProfile, Placement]] | None:
    """The naive strategy (each instance in the given order at its lowest free placement).

    Kept as the baseline the scorer's search is measured against in tests and docs.
    """
    taken = [pl for _, pl in occupied]
    result = []
    for profile in to_place:
        spot = next(
            (pl for pl in sorted(profile.placements, key=lambda p: p.start) if not any(overlaps(pl, t) for t in taken)),
            None,
        )
        if spot is None:
            return None
        taken.append(spot)
        result.append((profile, spot))
    return result


def pinned_placements(
    pins: Sequence[tuple[str, int]],
    keep: Sequence[ObservedGi],
    remaining: Counter[str],
    profiles: dict[str, GiProfile],
) -> list[tuple[GiProfile, Placement]] | None:
    """The pinned instances still to create, at their placements; None if one cannot be honoured (not a
    placement of its profile, more than the config asks for, or overlapping a kept or another pinned one)."""
    kept = {(gi.profile, gi.placement.start) for gi in keep}
    fixed: list[tuple[GiProfile, Placement]] = []
    budget = Counter(remaining)
    taken = [gi.placement for gi in keep]
    for name, start in pins:
        if (name, start) in kept:
            continue  # already there (created by an earlier apply, not yet bound by the controller)
        profile = profiles.get(name)
        placement = next((pl for pl in (profile.placements if profile else []) if pl.start == start), None)
        if profile is None or placement is None or budget[name] <= 0 or any(overlaps(placement, t) for t in taken):
            return None
        budget[name] -= 1
        taken.append(placement)
        fixed.append((profile, placement))
    return fixed
