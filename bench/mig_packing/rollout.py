"""A strong online policy for the MIG packing benchmark, as evidence where no exact online optimum is computed:
one-step lookahead with Monte Carlo rollouts of the trace generator, the engine's scorer as the base policy.

At each request ``RolloutPolicy`` tries every (GPU, placement) that gives a different fleet (up to the GPU
geometry's symmetries and the order of GPUs), and for each simulates ``samples`` futures of the generator from
the current live instances to the end of the trace (the events left are known, as they are to the exact online
optimum), placing every later request by the scorer; it takes the candidate with the most requests served before
the first refusal on average, if it serves more than the scorer's own choice by over two standard errors of the
paired differences (else the scorer's choice). Every candidate sees the same random futures (common random
numbers). The policy sees only the current layouts, the request and the generator's probabilities:
it is an online policy, and in expectation it serves at least about as many as the scorer (rollout improves on its
base policy, up to the sampling noise).
"""

from __future__ import annotations

import bisect
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench.mig_packing.tables import Tables

Live = list[tuple[int, int]]  # (gpu, start) of every live instance
Noise = list[tuple[float, float]]
Choose = Callable[[list[int], Live, int, int], tuple[int, int, int, int] | None]


class Generator:
    """The benchmark's trace generator (``make_trace``) as probabilities: profile weights and release chance."""

    def __init__(self, tables: Tables, weights: dict[str, int], release_p: float) -> None:
        self.tables = tables
        self.release_p = release_p
        self.total = sum(weights.values())
        self.cum = list(itertools_accumulate([weights[p] for p in tables.profiles]))

    def noise(self, rng: random.Random, events: int) -> list[tuple[float, float]]:
        return [(rng.random(), rng.random()) for _ in range(events)]

    def play(self, fleet: list[int], live: Live, noise: Sequence[tuple[float, float]]) -> int:
        """Requests the scorer serves before the first refusal over the events ``noise`` draws (one (u, v) each:
        a release of live instance ``int(v * live)`` if ``u < release_p`` and something is live, else a request
        of the profile at ``v`` on the cumulative weights)."""
        t = self.tables
        fleet = list(fleet)
        live = list(live)
        served = 0
        for u, v in noise:
            if live and u < self.release_p:
                i = int(v * len(live))
                g, s = live[i]
                live[i] = live[-1]
                live.pop()
                fleet[g] = t.release_after[fleet[g]][s]
                continue
            c = t.scorer(fleet, bisect.bisect_right(self.cum, v * self.total))
            if c is None:
                return served
            fleet[c[0]] = c[3]
            live.append((c[0], c[1]))
            served += 1
        return served


def itertools_accumulate(xs: list[int]) -> list[int]:
    out, s = [], 0
    for x in xs:
        s += x
        out.append(s)
    return out


class RolloutPolicy:
    def __init__(self, gen: Generator, samples: int, seed: int = 0, z: float = 2.0) -> None:
        self.gen = gen
        self.samples = samples
        self.z = z
        self.rng = random.Random(seed)
        self.decisions = 0  # requests with more than one distinct candidate
        self.departures = 0  # of those, where the rollout chose other than the scorer

    def __call__(self, fleet: list[int], live: Live, p: int, events_left: int) -> tuple[int, int, int, int] | None:
        t = self.gen.tables
        own = t.scorer(fleet, p)
        if own is None:
            return None
        seen = {_key(t, fleet, own[0], own[3])}
        cands = [own]
        for g, layout in enumerate(fleet):
            for s, size, after, _c, _t in t.options[layout][p]:
                k = _key(t, fleet, g, after)
                if k not in seen:
                    seen.add(k)
                    cands.append((g, s, size, after))
        if len(cands) == 1:
            return own
        self.decisions += 1
        noises = [self.gen.noise(self.rng, events_left - 1) for _ in range(self.samples)]
        base = self._scores(fleet, live, own, noises)
        best, best_gain = own, 0.0
        for c in cands[1:]:
            diff = [a - b for a, b in zip(self._scores(fleet, live, c, noises), base, strict=True)]
            gain = statistics.fmean(diff)
            # Leave the scorer only for a gain the samples show (paired, two standard errors): candidates that
            # differ by less than the noise would otherwise be picked by the noise.
            if gain > best_gain and gain > self.z * statistics.stdev(diff) / len(diff) ** 0.5:
                best, best_gain = c, gain
        self.departures += best is not own
        return best

    def _scores(self, fleet: list[int], live: Live, c: tuple[int, int, int, int], noises: list[Noise]) -> list[int]:
        after = list(fleet)
        after[c[0]] = c[3]
        now = [*live, (c[0], c[1])]
        return [self.gen.play(after, now, n) for n in noises]


def _key(t: Tables, fleet: list[int], g: int, after: int) -> tuple[int, ...]:
    return tuple(sorted(t.class_of[x] if h != g else t.class_of[after] for h, x in enumerate(fleet)))


def serve(tables: Tables, gpus: int, trace: list[tuple[str, Any]], choose: Choose) -> int:
    """Requests ``choose`` serves on ``trace`` before the first refusal (``choose(fleet, live, profile, events
    left)``, ``fleet`` the GPUs' layout numbers)."""
    fleet = [0] * gpus
    live: Live = []
    ids: list[int] = []  # request number of each live instance, in the order of ``live``
    served = 0
    for t, (kind, arg) in enumerate(trace):
        if kind == "rel":
            i = ids.index(arg)
            g, s = live.pop(i)
            ids.pop(i)
            fleet[g] = tables.release_after[fleet[g]][s]
            continue
        c = choose(fleet, live, tables.profiles.index(arg), len(trace) - t)
        if c is None:
            return served
        fleet[c[0]] = c[3]
        live.append((c[0], c[1]))
        ids.append(served)
        served += 1
    return served


def scorer(tables: Tables) -> Choose:
    return lambda fleet, live, p, left: tables.scorer(fleet, p)
