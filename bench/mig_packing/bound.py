"""Upper bounds for the MIG packing benchmark: what no placement policy can beat.

* ``capacity_bound``: the first request at which the instances alive at once need more compute slices, more
  memory slices or more whole-half instances (4g/7g: at most one per GPU) than the fleet has. No policy serves
  past it, not even one that knows the future and migrates instances freely.
* ``online_optimum``: the exact best *online* policy for the benchmark's trace generator on a small fleet, by
  dynamic programming. The policy sees the current layouts and the request (and knows the generator's
  probabilities exactly, which only helps it), never the future: ``V(fleet, events left)`` is the expected number
  of requests served before the first refusal, maximised over every (GPU, placement) choice at every request.
  No online policy, however clever its scorer, serves more in expectation. ``policy_value`` is the same
  expectation for a fixed policy (the engine's scorer, first-fit), so the three compare exactly.

The DP's state is the multiset of GPU layouts (GPUs are interchangeable); it is exact but grows as the number of
layouts (723 on an A100) to the power of the fleet size, so it is run on 1 and 2 GPUs (``exact`` reaches 3 GPUs
by working on layouts up to the slice geometry's symmetries).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from controller.placement.mig import HostPlaces
from drivers.gpus import mig_score as mig

Fleet = tuple[mig.Layout, ...]
Choice = tuple[int, int, int]  # (gpu, start, size)
Policy = Callable[[str, Fleet, str], Choice | None]


def capacity_bound(model: str, gpus: int, trace: list[tuple[str, object]]) -> int:
    """Requests any policy (clairvoyant, migrating) can serve before the first refusal, at most."""
    geom = mig.geometry(model)
    assert geom is not None
    active: dict[int, str] = {}
    n = 0
    for kind, arg in trace:
        if kind == "rel":
            active.pop(arg)  # type: ignore[call-overload]
            continue
        active[n] = str(arg)
        profiles = [geom.profiles[p] for p in active.values()]
        compute = sum(p.slices for p in profiles)
        memory = sum(min(size for _, size in p.placements) for p in profiles)
        halves = sum(1 for p in profiles if p.slices >= 4)
        if compute > geom.compute_slices * gpus or memory > geom.memory_slices * gpus or halves > gpus:
            return n
        n += 1
    return n


def layouts(model: str) -> list[mig.Layout]:
    """Every layout one GPU can reach by creating instances of base profiles (723 on an A100), empty first."""
    geom = mig.geometry(model)
    assert geom is not None
    names = [p.name for p in geom.profiles.values() if not p.is_variant]
    seen: dict[mig.Layout, None] = {(): None}
    todo: list[mig.Layout] = [()]
    while todo:
        layout = todo.pop()
        for name in names:
            for start, size in mig.free_placements(model, layout, name):
                after = mig.add(layout, start, size, name)
                if after not in seen:
                    seen[after] = None
                    todo.append(after)
    return list(seen)


class _Fleets:
    """Every fleet state (multiset of GPU layouts) with its successors, as flat index arrays for numpy."""

    def __init__(self, model: str, gpus: int, profiles: list[str], policy: Policy | None) -> None:
        per_gpu = layouts(model)
        states = list(itertools.combinations_with_replacement(range(len(per_gpu)), gpus))
        index = {s: i for i, s in enumerate(states)}
        self.size = len(states)
        rel_from: list[int] = []
        rel_to: list[int] = []
        moves: list[tuple[list[int], list[int]]] = [([], []) for _ in profiles]
        of = {layout: i for i, layout in enumerate(per_gpu)}

        def canon(state: tuple[int, ...], g: int, layout: mig.Layout) -> int:
            return index[tuple(sorted((*state[:g], of[layout], *state[g + 1 :])))]

        for i, state in enumerate(states):
            fleet = tuple(per_gpu[x] for x in state)
            for g, layout in enumerate(fleet):
                for inst in layout:
                    rel_from.append(i)
                    rel_to.append(canon(state, g, mig.remove(layout, *inst)))
            for p, profile in enumerate(profiles):
                src, dst = moves[p]
                if policy is not None:
                    choice = policy(model, fleet, profile)
                    if choice is not None:
                        g, start, size = choice
                        src.append(i)
                        dst.append(canon(state, g, mig.add(fleet[g], start, size, profile)))
                    continue
                for g, layout in enumerate(fleet):
                    if g and state[g] == state[g - 1]:
                        continue  # the same layout on another GPU gives the same fleets
                    for start, size in mig.free_placements(model, layout, profile):
                        src.append(i)
                        dst.append(canon(state, g, mig.add(layout, start, size, profile)))
        self.rel_from, self.rel_to = np.array(rel_from, dtype=np.int64), np.array(rel_to, dtype=np.int64)
        self.releases = np.bincount(self.rel_from, minlength=self.size)
        self.moves = [(np.array(s, dtype=np.int64), np.array(d, dtype=np.int64)) for s, d in moves]
        self.empty = index[(0,) * gpus]


def _expected_served(
    model: str, gpus: int, events: int, weights: dict[str, int], release_p: float, policy: Policy | None
) -> float:
    """``V_k(fleet)`` = expected requests served in the next ``k`` events before the first refusal, for every
    fleet at once, layer by layer up to ``events``; the best move at each request (or the policy's)."""
    profiles = list(weights)
    total = sum(weights.values())
    fleets = _Fleets(model, gpus, profiles, policy)
    value = np.zeros(fleets.size)
    for _ in range(events):
        serve = np.zeros(fleets.size)
        for p, (src, dst) in enumerate(fleets.moves):
            best = np.full(fleets.size, -1.0)  # -1 + 1 = 0: refused, nothing more served
            np.maximum.at(best, src, value[dst])
            serve += weights[profiles[p]] / total * (best + 1.0)
        gone = np.zeros(fleets.size)
        np.add.at(gone, fleets.rel_from, value[fleets.rel_to])
        has = fleets.releases > 0
        mixed = serve.copy()
        mixed[has] = release_p * gone[has] / fleets.releases[has] + (1 - release_p) * serve[has]
        value = mixed
    return float(value[fleets.empty])


def online_optimum(model: str, gpus: int, events: int, weights: dict[str, int], release_p: float) -> float:
    """Expected requests served before the first refusal by the best online policy (exact)."""
    return _expected_served(model, gpus, events, weights, release_p, None)


def policy_value(
    model: str, gpus: int, events: int, weights: dict[str, int], release_p: float, policy: Policy
) -> float:
    """The same expectation for one fixed policy."""
    return _expected_served(model, gpus, events, weights, release_p, policy)


def scorer_choice(model: str, fleet: Fleet, profile: str) -> Choice | None:
    """The engine's choice when the fleet is one host: the GPU and start of least ``mig.host_cost`` (lowest GPU
    index on ties), as ``controller.placement.host_plan.pick_mig`` chooses."""
    places = HostPlaces([(model, layout) for layout in fleet], lambda model, profile: False)
    best: tuple[int, int, int, int] | None = None
    for g, layout in enumerate(fleet):
        outside = places.outside(model, layout)
        bp = mig.best_placement(model, layout, profile, outside)
        if bp is not None and (best is None or (bp[0], g) < best[:2]):
            best = (bp[0], g, bp[1], bp[2])
    return None if best is None else best[1:]


def first_fit_choice(model: str, fleet: Fleet, profile: str) -> Choice | None:
    for g, layout in enumerate(fleet):
        pl = mig.first_placement(model, layout, profile)
        if pl is not None:
            return g, pl[0], pl[1]
    return None
