"""One GPU's MIG layouts as small integers, for the bench's fast simulations and dynamic programmes.

``Tables(model, profiles)`` numbers every layout one GPU can reach (``bound.layouts``: 723 on an A100, the empty
layout is 0) and precomputes, per layout, what the engine's scorer and the generator need: for every profile its
free placements with the layout after, ``mig.placement_cost`` and ``mig.last_places_taken`` (as a bit mask); which
base profiles it can still create; and, per live instance, the layout after its release. ``scorer`` is then the
engine's choice (``mig.host_cost`` over one host's GPUs, lowest GPU index on ties, as ``bound.scorer_choice``)
by table look-ups only.

``classes`` are the layouts up to the symmetries of the GPU's placement geometry: permutations of the memory
slices that map every profile's set of placements onto itself (16 on an A100: swap slices 0/1, 2/3, 4/5, and the
pairs 0-1 / 2-3). Two layouts in one class have the same future under any policy (the symmetry maps every
placement, and every release, of one onto the other's), so the exact online optimum may work on classes (273 on an
A100) instead of layouts.
"""

from __future__ import annotations

import itertools
from functools import cache

from bench.mig_packing import bound
from drivers.gpus import mig_score as mig

Option = tuple[int, int, int, int, int]  # (start, size, layout after, placement cost, last places taken as bits)


class Tables:
    def __init__(self, model: str, profiles: list[str]) -> None:
        geom = mig.geometry(model)
        assert geom is not None
        self.model = model
        self.profiles = profiles
        self.layouts = bound.layouts(model)
        self.index = {layout: i for i, layout in enumerate(self.layouts)}
        base = [p.name for p in geom.profiles.values() if not p.is_variant]
        bit = {name: 1 << i for i, name in enumerate(base)}
        self.penalty = 2 * mig._cost_scales(model)[0]  # host_cost's price of a profile left without any place
        self.options: list[list[tuple[Option, ...]]] = []
        self.creatable: list[int] = []
        self.releases: list[tuple[tuple[tuple[int, int, str], int], ...]] = []
        self.release_after: list[dict[int, int]] = []  # per layout: instance start -> layout after its release
        for layout in self.layouts:
            per_profile = []
            for p in profiles:
                opts = []
                for s, n in mig.free_placements(model, layout, p):
                    after = self.index[mig.add(layout, s, n, p)]
                    taken = sum(bit[q] for q in mig.last_places_taken(model, layout, p, s, n))
                    opts.append((s, n, after, mig.placement_cost(model, layout, p, s, n), taken))
                per_profile.append(tuple(opts))
            self.options.append(per_profile)
            self.creatable.append(sum(bit[q] for q in base if mig.creatable(model, layout, q)))
            self.releases.append(tuple((inst, self.index[mig.remove(layout, *inst)]) for inst in layout))
            self.release_after.append({inst[0]: after for inst, after in self.releases[-1]})
        self.classes, self.class_of = _classes(model, self.layouts, self.index)

    def scorer(self, fleet: list[int], p: int) -> tuple[int, int, int, int] | None:
        """The engine's choice for profile number ``p`` on one host whose GPUs are in ``fleet`` (layout numbers):
        ``(gpu, start, size, layout after)`` of least ``host_cost`` (highest start, then lowest GPU, on ties)."""
        best: tuple[int, int, int, int, int, int] | None = None
        creat = self.creatable
        n = len(fleet)
        for g in range(n):
            opts = self.options[fleet[g]][p]
            if not opts:
                continue
            others = 0
            for h in range(n):
                if h != g:
                    others |= creat[fleet[h]]
            for s, size, after, cost, taken in opts:
                lost = taken & ~others
                c = cost + bin(lost).count("1") * self.penalty if lost else cost
                key = (c, g, -s, s, size, after)
                if best is None or key < best:
                    best = key
        return None if best is None else (best[1], best[3], best[4], best[5])

    def first_fit(self, fleet: list[int], p: int) -> tuple[int, int, int, int] | None:
        for g, layout in enumerate(fleet):
            opts = self.options[layout][p]
            if opts:
                s, size, after, _c, _t = opts[0]
                return g, s, size, after
        return None


def _classes(model: str, layouts: list[mig.Layout], index: dict[mig.Layout, int]) -> tuple[list[int], list[int]]:
    """The layout numbers of one representative per class (the empty layout first) and each layout's class."""
    perms = automorphisms(model)
    class_of = [-1] * len(layouts)
    reps: list[int] = []
    for i, layout in enumerate(layouts):
        if class_of[i] >= 0:
            continue
        for perm in perms:
            j = index[_image(layout, perm)]
            class_of[j] = len(reps)
        reps.append(i)
    return reps, class_of


def _image(layout: mig.Layout, perm: tuple[int, ...]) -> mig.Layout:
    return tuple(sorted((min(perm[m] for m in range(s, s + n)), n, p) for s, n, p in layout))


@cache
def automorphisms(model: str) -> tuple[tuple[int, ...], ...]:
    """Permutations of the memory slices that map each base profile's placements (as slice sets) onto themselves;
    each maps a placement's slices onto a placement's, so ``_image`` (lowest slice) is the image placement."""
    geom = mig.geometry(model)
    assert geom is not None
    sets = [{frozenset(range(s, s + n)) for s, n in p.placements} for p in geom.profiles.values() if not p.is_variant]
    return tuple(
        perm
        for perm in itertools.permutations(range(geom.memory_slices))
        if all({frozenset(perm[m] for m in x) for x in placements} == placements for placements in sets)
    )
