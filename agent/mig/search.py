"""Where GPU instances go on one GPU: the exhaustive layout search (largest contiguous free range, then fewest
holes, then lowest starts), the first-fit baseline it is measured against, and the placements the controller
chose for lease instances (created exactly there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.contract.inventory import Placement

if TYPE_CHECKING:
    from agent.mig.model import GiProfile, ObservedGi


def memory_slice_count(profiles: Iterable[GiProfile]) -> int:
    """Memory slices of the GPU: the end of the furthest placement (8 on A100/H100, 4 on A30)."""
    return max((pl.start + pl.size for p in profiles for pl in p.placements), default=0)


def compute_slice_count(profiles: Iterable[GiProfile]) -> int:
    """Compute slices of the GPU: those of its largest profile (7g -> 7)."""
    return max((p.slices for p in profiles), default=0)


def fragmentation_score(occupied: Iterable[Placement], total: int) -> tuple[int, int]:
    """(largest contiguous free run, number of free runs) over memory slices."""
    used = [False] * total
    for p in occupied:
        for s in range(p.start, min(p.start + p.size, total)):
            used[s] = True
    runs: list[int] = []
    length = 0
    for taken in [*used, True]:
        if taken:
            if length:
                runs.append(length)
            length = 0
        else:
            length += 1
    return (max(runs, default=0), len(runs))


def overlaps(a: Placement, b: Placement) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


@dataclass(frozen=True)
class _Candidate:
    placed: tuple[tuple[GiProfile, Placement], ...]
    key: tuple[int, int, tuple[tuple[int, int], ...]]


def best_placements(
    to_place: Sequence[GiProfile],
    occupied: Sequence[tuple[int, Placement]],
    table: Sequence[GiProfile],
) -> list[tuple[GiProfile, Placement]] | None:
    """Place every profile in ``to_place`` around ``occupied`` (profile id, placement) pairs.

    Exhaustive: among all layouts that fit, return the one leaving the largest contiguous free
    range, then the fewest free holes, then the lowest starts (a total order, so the same inputs
    always give the same answer - which is what makes interrupted applies converge to the same
    layout). ``None`` when nothing fits.
    """
    total = memory_slice_count(table)
    compute_total = compute_slice_count(table)
    by_id = {p.profile_id: p for p in table}
    used_compute = sum(by_id[pid].slices for pid, _ in occupied if pid in by_id)
    if used_compute + sum(p.slices for p in to_place) > compute_total:
        return None
    counts = Counter(pid for pid, _ in occupied)
    counts.update(p.profile_id for p in to_place)
    if any(counts[pid] > by_id[pid].max_instances for pid in counts if pid in by_id):
        return None
    # Big instances first prunes the search early; same-profile instances take increasing starts
    # so that permutations of identical instances are not explored twice.
    order = sorted(to_place, key=lambda p: (-max((pl.size for pl in p.placements), default=0), p.profile_id))
    best: _Candidate | None = None
    taken: list[Placement] = [pl for _, pl in occupied]
    chosen: list[tuple[GiProfile, Placement]] = []

    def search(i: int) -> None:
        nonlocal best
        if i == len(order):
            largest, holes = fragmentation_score(taken, total)
            starts = tuple(sorted((pl.start, p.profile_id) for p, pl in chosen))
            candidate = _Candidate(tuple(chosen), (-largest, holes, starts))
            if best is None or candidate.key < best.key:
                best = candidate
            return
        profile = order[i]
        floor = -1
        if i > 0 and order[i - 1].profile_id == profile.profile_id:
            floor = chosen[-1][1].start
        for pl in sorted(profile.placements, key=lambda p: p.start):
            if pl.start <= floor or any(overlaps(pl, t) for t in taken):
                continue
            taken.append(pl)
            chosen.append((profile, pl))
            search(i + 1)
            chosen.pop()
            taken.pop()

    search(0)
    if best is None:
        return None
    return sorted(best.placed, key=lambda pp: (pp[1].start, pp[0].profile_id))


def first_fit_placements(
    to_place: Sequence[GiProfile], occupied: Sequence[tuple[int, Placement]]
) -> list[tuple[GiProfile, Placement]] | None:
    """The naive strategy (each instance in the given order at its lowest free placement).

    Kept as the baseline the fragmentation-aware search is measured against in tests and docs.
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
