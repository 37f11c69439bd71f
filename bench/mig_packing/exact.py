"""The exact best online policy on fleets of up to 3 GPUs, by dynamic programming over fleet *classes*.

``bound.online_optimum`` works on multisets of GPU layouts (723 per A100 GPU: 261,726 fleets of 2 GPUs,
63 million of 3). Here a fleet is the multiset of its GPUs' layout *classes* (``tables``: layouts up to the
symmetries of the placement geometry, 273 on an A100): two fleets in one class have the same future under the
best policy, because the symmetry maps each one's placements and releases onto the other's. That leaves 37,401
fleets of 2 GPUs and 3,428,425 of 3. The recursion is ``bound``'s: with ``V_0 = 0``,

    V_k(F) = r * mean over live instances i of V_{k-1}(F - i)
             + (1 - r) * sum over profiles p of w_p * (1 + max over placements x of p in F of V_{k-1}(F + x))

(``r`` the release chance, ``0`` when nothing is live; a request with no placement contributes 0: refused), and
``V_events(empty fleet)`` is the expected number of requests the best online policy serves before the first
refusal. Every successor of every fleet is computed once as an index array (numpy), then each of the ``events``
layers is a few gathers: 3 GPUs take about 20 s to build and 60 s for 62 events, in about 2 GB. At 4 GPUs there
are 236,561,325 fleet classes and 80 successor arrays of that length (76 GB as int32, against 0.8 GB at 3 GPUs),
and the 76 layers would each gather 80 x 236 million values: ``estimate`` gives the figures and the run is refused.
"""

from __future__ import annotations

from math import comb

import numpy as np

from bench.mig_packing.tables import Tables


def fleet_classes(classes: int, gpus: int) -> int:
    return comb(classes + gpus - 1, gpus)


class ClassDP:
    """``V_k`` for every fleet class, ``k`` = 0 .. ``events``; ``values[k]`` kept (float32) when ``keep``."""

    MAX_FLEETS = 10_000_000

    def __init__(self, tables: Tables, gpus: int, weights: dict[str, int], release_p: float) -> None:
        n_classes = len(tables.classes)
        self.size = fleet_classes(n_classes, gpus)
        if self.size > self.MAX_FLEETS:
            raise ValueError(f"{self.size} fleet classes on {gpus} GPUs: too many to hold (see exact.estimate)")
        self.tables, self.gpus, self.release_p = tables, gpus, release_p
        total = sum(weights.values())
        self.share = [weights[p] / total for p in tables.profiles]
        self._binom = np.array([[comb(n, r) for r in range(gpus + 1)] for n in range(n_classes + gpus)], dtype=np.int64)
        states = _all_sorted(n_classes, gpus)
        order = np.argsort(self.rank(states))
        self.states = states[order]
        add, rel = _class_moves(tables)
        dead_add, dead_rel = self.size, self.size + 1  # sentinels: V_ext[size] = -1 (refused), V_ext[size + 1] = 0
        self.adds: list[list[np.ndarray]] = []
        for p in range(len(tables.profiles)):
            self.adds.append(
                [self._successors(j, add[p][:, o], dead_add) for j in range(gpus) for o in range(add[p].shape[1])]
            )
        self.rels = [self._successors(j, rel[:, o], dead_rel) for j in range(gpus) for o in range(rel.shape[1])]
        self.n_rel = sum((r != dead_rel).astype(np.int64) for r in self.rels)
        self.empty = int(self.rank(np.zeros((1, gpus), dtype=np.int64))[0])
        self.values: list[np.ndarray] = []

    def rank(self, states: np.ndarray) -> np.ndarray:
        """Colex rank of sorted class tuples (rows): the fleet's index."""
        b = states.astype(np.int64) + np.arange(self.gpus)
        return sum(self._binom[b[:, i], i + 1] for i in range(self.gpus))

    def _successors(self, j: int, to: np.ndarray, dead: int) -> np.ndarray:
        """Fleet index after GPU position ``j`` of every fleet moves to class ``to[its class]`` (``dead`` if -1)."""
        new = to[self.states[:, j]]
        ok = new >= 0
        after = self.states.copy()
        after[:, j] = np.where(ok, new, 0)
        after.sort(axis=1)
        return np.where(ok, self.rank(after), dead).astype(np.int32)

    def run(self, events: int, keep: bool = False) -> float:
        v = np.zeros(self.size)
        self.values = [v.astype(np.float32)] if keep else []
        has = self.n_rel > 0
        for _ in range(events):
            ext = np.concatenate([v, [-1.0, 0.0]])
            serve = np.zeros(self.size)
            for share, moves in zip(self.share, self.adds, strict=True):
                best = np.full(self.size, -1.0)
                for m in moves:
                    np.maximum(best, ext[m], out=best)
                serve += share * (best + 1.0)
            gone = np.zeros(self.size)
            for m in self.rels:
                gone += ext[m]
            v = serve
            v[has] = self.release_p * gone[has] / self.n_rel[has] + (1 - self.release_p) * serve[has]
            if keep:
                self.values.append(v.astype(np.float32))
        return float(v[self.empty])

    def fleet_index(self, fleet: list[int]) -> int:
        """The index of a fleet given as layout numbers (any order)."""
        classes = sorted(self.tables.class_of[x] for x in fleet)
        return int(self.rank(np.array([classes], dtype=np.int64))[0])

    def choose(self, fleet: list[int], p: int, events_left: int) -> tuple[int, int, int, int] | None:
        """The best online move for profile number ``p`` with ``events_left`` events to go (this request included;
        ``run(..., keep=True)`` first): the placement whose fleet has the largest ``V_{events_left - 1}``, the
        scorer's own choice on ties."""
        values = self.values[events_left - 1]
        own = self.tables.scorer(fleet, p)
        if own is None:
            return None
        best, best_v = own, values[self._after(fleet, own[0], own[3])]
        for g, layout in enumerate(fleet):
            for s, size, after, _c, _t in self.tables.options[layout][p]:
                v = values[self._after(fleet, g, after)]
                if v > best_v:
                    best, best_v = (g, s, size, after), v
        return best

    def _after(self, fleet: list[int], g: int, after: int) -> int:
        return self.fleet_index([after if h == g else x for h, x in enumerate(fleet)])


def _all_sorted(n: int, k: int) -> np.ndarray:
    """Every non-decreasing k-tuple over range(n), as rows."""
    rows = np.arange(n, dtype=np.int64).reshape(-1, 1)
    for _ in range(k - 1):
        last = rows[:, -1]
        reps = n - last
        base = np.repeat(rows, reps, axis=0)
        nxt = np.concatenate([np.arange(a, n) for a in last]) if len(last) else np.zeros(0, dtype=np.int64)
        rows = np.column_stack([base, nxt])
    return rows


def _class_moves(t: Tables) -> tuple[list[np.ndarray], np.ndarray]:
    """Per profile, each class's distinct successor classes (rows padded with -1); each class's successor class
    per live instance (with repeats: each instance is released with equal chance)."""
    add = []
    for p in range(len(t.profiles)):
        succ = [sorted({t.class_of[o[2]] for o in t.options[rep][p]}) for rep in t.classes]
        add.append(_pad(succ))
    rel = _pad([[t.class_of[after] for _inst, after in t.releases[rep]] for rep in t.classes])
    return add, rel


def _pad(rows: list[list[int]]) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    return np.array([r + [-1] * (width - len(r)) for r in rows], dtype=np.int64)


def estimate(tables: Tables, gpus: int) -> dict[str, int]:
    """Fleet classes and successor arrays the DP would hold on ``gpus`` GPUs (the measured reason it stops at 3)."""
    add, rel = _class_moves(tables)
    arrays = gpus * (sum(a.shape[1] for a in add) + rel.shape[1])
    size = fleet_classes(len(tables.classes), gpus)
    return {"gpus": gpus, "fleet_classes": size, "successor_arrays": arrays, "successor_bytes": size * arrays * 4}
