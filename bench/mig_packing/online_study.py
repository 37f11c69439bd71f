"""Why the headline seeds sit below the clairvoyant optimum, and what online policies do on them.

* ``diagnose``: per headline seed on the benchmark fleet, the engine's first refusal against the capacity bound
  (``bound.capacity_bound``). The instances live at a refusal are the same for every policy that served everything
  before it, so when the engine stops below the capacity bound the refused request fitted the fleet's slices and
  halves: the layout the placements built is what refused it (and the clairvoyant, which always reaches the
  capacity bound on these seeds, arranged the same instances so that it fits).
* ``exact_study``: the exact best online policy (``exact.ClassDP``) on 3 GPUs, its expected value against the
  scorer's (Monte Carlo) and, replayed as a policy, on the headline seeds and on seeds 100-199 against the
  clairvoyant optimum (ILP). The same seeds give the same traces at every fleet size (cut to the fleet's length).
* ``rollout_study``: the rollout policy (``rollout``) on the benchmark's fleet (4 GPUs), where no exact online
  optimum is computed, on the same seeds: evidence, not a bound.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from bench.mig_packing import bound, exact, rollout
from bench.mig_packing.tables import Tables
from bench.mig_packing.traces import (
    _prefix_len,
    make_trace,
    optimum_prefix,
    served_engine,
    served_first_fit,
    served_optimum,
)


def events_for(gpus: int) -> int:
    return 14 * gpus + 20


def _clairvoyant(model: str, gpus: int, trace: list[Any], time_limit: float) -> int:
    lower = max(served_engine(model, gpus, trace), served_first_fit(model, gpus, trace))
    return optimum_prefix(model, gpus, trace, lower, time_limit)[0]


def _compare(model: str, gpus: int, seeds: range, policy: rollout.Choose, t: Tables, limit: float) -> dict[str, Any]:
    """Scorer, ``policy`` and clairvoyant optimum served on each seed's trace; means of the per-seed ratios."""
    runs = []
    for seed in seeds:
        trace = make_trace(model, events_for(gpus), seed)
        runs.append(
            {
                "seed": seed,
                "scorer": rollout.serve(t, gpus, trace, rollout.scorer(t)),
                "policy": rollout.serve(t, gpus, trace, policy),
                "clairvoyant": _clairvoyant(model, gpus, trace, limit),
            }
        )
    return {
        "seeds": f"{seeds[0]}-{seeds[-1]}",
        "scorer_vs_clairvoyant": round(statistics.fmean(r["scorer"] / r["clairvoyant"] for r in runs), 4),
        "policy_vs_clairvoyant": round(statistics.fmean(r["policy"] / r["clairvoyant"] for r in runs), 4),
        "scorer_mean": round(statistics.fmean(r["scorer"] for r in runs), 3),
        "policy_mean": round(statistics.fmean(r["policy"] for r in runs), 3),
        "clairvoyant_mean": round(statistics.fmean(r["clairvoyant"] for r in runs), 3),
        "runs": runs,
    }


def diagnose(model: str, gpus: int, seeds: range) -> list[dict[str, Any]]:
    out = []
    for seed in seeds:
        trace = make_trace(model, events_for(gpus), seed)
        served = served_engine(model, gpus, trace)
        refused = [arg for kind, arg in trace if kind == "req"][served] if served < _requests(trace) else None
        cap = bound.capacity_bound(model, gpus, trace)
        out.append(
            {
                "seed": seed,
                "engine": served,
                "capacity_bound": cap,
                "refused": refused,
                "cause": "capacity" if served >= cap else "layout",
            }
        )
    return out


def blocks(model: str, weights: dict[str, int], gpus: int, seeds: range, n_seeds: int) -> dict[str, Any]:
    """How the headline block of seeds ranks among the first ``n_seeds`` seeds cut into blocks of its length, by
    the mean of scorer / capacity bound per seed. The capacity bound is at least the clairvoyant optimum (equal on
    all but one of the seeds where both are computed here), so this ratio is a lower estimate of scorer /
    clairvoyant that needs no ILP and can be taken over thousands of seeds."""
    t = Tables(model, list(weights))
    ratios = []
    for seed in range(n_seeds):
        trace = make_trace(model, events_for(gpus), seed)
        ratios.append(rollout.serve(t, gpus, trace, rollout.scorer(t)) / bound.capacity_bound(model, gpus, trace))
    size = len(seeds)
    means = [statistics.fmean(ratios[i : i + size]) for i in range(0, n_seeds - size + 1, size)]
    head = statistics.fmean(ratios[seeds[0] : seeds[-1] + 1])
    return {
        "gpus": gpus,
        "seeds": f"0-{n_seeds - 1}",
        "block": size,
        "blocks": len(means),
        "mean": round(statistics.fmean(ratios), 4),
        "headline": round(head, 4),
        "blocks_at_or_below_headline": sum(1 for m in means if m <= head + 1e-12),
        "next_worst": round(sorted(means)[1], 4) if len(means) > 1 else None,
        "blocks_at_least_90": sum(1 for m in means if m >= 0.90),
        "seeds_at_most_70": sum(1 for r in ratios if r <= 0.70),
        "headline_at_most_70": sum(1 for r in ratios[seeds[0] : seeds[-1] + 1] if r <= 0.70),
    }


def decisive(t: Tables, gen: rollout.Generator, gpus: int, seed: int, samples: int, limit: float) -> dict[str, Any]:
    """The clairvoyant placement that matters on a seed the engine loses: ``f(k)`` = requests served when the
    first ``k`` requests are placed where the clairvoyant optimum (ILP) places them and the rest by the scorer;
    ``f(0)`` is the engine's figure and the smallest ``k`` with ``f(k)`` = the optimum names request ``k - 1`` as
    the last clairvoyant placement needed. At that request, on the clairvoyant's layout, both placements (the
    scorer's and the clairvoyant's) are valued by ``samples`` simulated futures of the generator (the scorer
    placing the rest, the same futures for both): what an online policy, which sees only the layout, would
    expect from each."""
    model = t.model
    trace = make_trace(model, events_for(gpus), seed)
    opt = _clairvoyant(model, gpus, trace, limit)
    where: dict[int, tuple[int, int]] = {}
    served_optimum(model, gpus, trace[: _prefix_len(trace, opt)], limit, where)
    k = next(k for k in range(opt + 1) if _replay(t, gpus, trace, where, k)[0] == opt)
    at = _replay(t, gpus, trace, where, k - 1)[1]
    assert at is not None
    fleet, live, pos, p = at
    own = t.scorer(fleet, p)
    assert own is not None
    g, start = where[k - 1]
    theirs = next((g, s, n, after) for s, n, after, _c, _t in t.options[fleet[g]][p] if s == start)
    rng = random.Random(seed)
    noises = [gen.noise(rng, len(trace) - pos - 1) for _ in range(samples)]
    values = []
    for c in (own, theirs):
        after = list(fleet)
        after[c[0]] = c[3]
        values.append([gen.play(after, [*live, (c[0], c[1])], n) for n in noises])
    diff = [b - a for a, b in zip(*values, strict=True)]
    return {
        "seed": seed,
        "request": k - 1,
        "profile": t.profiles[p],
        "layouts": [list(t.layouts[x]) for x in fleet],
        "scorer_choice": list(own[:2]),
        "clairvoyant_choice": [g, start],
        "scorer_expects": round(statistics.fmean(values[0]), 3),
        "clairvoyant_expects": round(statistics.fmean(values[1]), 3),
        "difference": round(statistics.fmean(diff), 3),
        "difference_se": round(statistics.stdev(diff) / len(diff) ** 0.5, 3),
        "samples": samples,
    }


def _replay(
    t: Tables, gpus: int, trace: list[Any], where: dict[int, tuple[int, int]], k: int
) -> tuple[int, tuple[list[int], rollout.Live, int, int] | None]:
    """Requests before ``k`` where ``where`` puts them, the rest by the scorer: requests served, and at the arrival
    of request ``k`` (if it comes) the layouts, live instances, trace position and profile."""
    fleet, live, ids, n = [0] * gpus, [], [], 0
    at = None
    for pos, (kind, arg) in enumerate(trace):
        if kind == "rel":
            i = ids.index(arg)
            g, s = live.pop(i)
            ids.pop(i)
            fleet[g] = t.release_after[fleet[g]][s]
            continue
        p = t.profiles.index(arg)
        if n == k:
            at = (list(fleet), list(live), pos, p)
        if n < k:
            g, s = where[n]
            c = next((g, s, size, after) for s2, size, after, _c, _t in t.options[fleet[g]][p] if s2 == s)
        else:
            got = t.scorer(fleet, p)
            if got is None:
                return n, at
            c = got
        fleet[c[0]] = c[3]
        live.append((c[0], c[1]))
        ids.append(n)
        n += 1
    return n, at


def _requests(trace: list[Any]) -> int:
    return sum(1 for kind, _ in trace if kind == "req")


def exact_study(
    model: str, weights: dict[str, int], release_p: float, gpus: int, seeds: range, sample_seeds: range, **kw: Any
) -> dict[str, Any]:
    t = Tables(model, list(weights))
    dp = exact.ClassDP(t, gpus, weights, release_p)
    events = events_for(gpus)
    best = dp.run(events, keep=True)
    gen = rollout.Generator(t, weights, release_p)
    rng = random.Random(0)
    mc = [gen.play([0] * gpus, [], gen.noise(rng, events)) for _ in range(kw["mc_samples"])]
    mean, se = statistics.fmean(mc), statistics.stdev(mc) / len(mc) ** 0.5

    def policy(fleet: list[int], live: rollout.Live, p: int, left: int) -> tuple[int, int, int, int] | None:
        return dp.choose(fleet, p, left)

    res = {
        "gpus": gpus,
        "events": events,
        "layout_classes": len(t.classes),
        "fleet_classes": dp.size,
        "online_optimum": round(best, 4),
        "scorer_expected": round(mean, 4),
        "scorer_expected_se": round(se, 4),
        "mc_samples": kw["mc_samples"],
        "scorer_vs_online": round(mean / best, 4),
        "headline": _compare(model, gpus, seeds, policy, t, kw["time_limit"]),
        "sampled": _compare(model, gpus, sample_seeds, policy, t, kw["time_limit"]),
        "too_large": exact.estimate(t, gpus + 1),
    }
    dp.values = []
    return res


def rollout_study(
    model: str, weights: dict[str, int], release_p: float, gpus: int, seeds: range, sample_seeds: range, **kw: Any
) -> dict[str, Any]:
    t = Tables(model, list(weights))
    gen = rollout.Generator(t, weights, release_p)
    res: dict[str, Any] = {"gpus": gpus, "events": events_for(gpus), "samples": kw["rollout_samples"]}
    for name, rng_seeds in (("headline", seeds), ("sampled", sample_seeds)):
        policy = rollout.RolloutPolicy(gen, kw["rollout_samples"], seed=0)
        res[name] = _compare(model, gpus, rng_seeds, policy, t, kw["time_limit"])
        res[name]["decisions"], res[name]["departures"] = policy.decisions, policy.departures
    runs = res["headline"]["runs"] + res["sampled"]["runs"]
    res["clairvoyant_seeds"] = len(runs)
    res["clairvoyant_is_capacity"] = sum(
        1
        for r in runs
        if r["clairvoyant"] == bound.capacity_bound(model, gpus, make_trace(model, events_for(gpus), r["seed"]))
    )
    return res


def markdown(model: str, s: dict[str, Any]) -> list[str]:
    ex, ro, dg, bl = s["exact"], s["rollout"], s["diagnosis"], s["blocks"]
    layout = [d for d in dg if d["cause"] == "layout"]
    same = sum(1 for r, d in zip(ro["headline"]["runs"], dg, strict=True) if r["clairvoyant"] == d["capacity_bound"])
    better = sum(1 for x in s["decisive"] if x["difference"] > 2 * x["difference_se"])
    samples = s["decisive"][0]["samples"] if s["decisive"] else 0
    lines = [
        f"### {model}: why the headline seeds fall short, and what online policies do on them",
        "",
        f"**Diagnosis ({ro['gpus']} GPUs, seeds {ex['headline']['seeds']}).** The clairvoyant optimum equals the",
        f"capacity bound on {same} of the {len(dg)} headline seeds. The engine reaches the capacity bound on "
        + ", ".join(str(d["seed"]) for d in dg if d["cause"] == "capacity")
        + "; on "
        + ", ".join(f"{d['seed']} ({d['engine']} of {d['capacity_bound']}, refused {d['refused']})" for d in layout)
        + " it refuses a request that the fleet's slices and halves hold: the live instances are the same for",
        "every policy that served everything before, so the refusal comes from where earlier instances were",
        "placed (a 7g with no empty GPU, a 4g with no free low half, a 3g with no free half), not from capacity.",
        "",
        "Which earlier placement made the difference: with the first *k* requests placed where the clairvoyant",
        "optimum (one optimal ILP solution) places them and the rest by the scorer, the smallest *k* that reaches the",
        "optimum names request *k* - 1 as the last clairvoyant placement needed. At that request, on the",
        f"clairvoyant's layout, both placements are valued by {samples} simulated futures of the generator (the scorer",
        "placing the rest, the same futures for both): what an online policy, which sees only the layout and the",
        "request, would expect from each.",
        "",
        "| seed | request | profile | scorer's (GPU, start) | clairvoyant's | expected served after: scorer's "
        "| clairvoyant's | difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {x['seed']} | {x['request']} | {x['profile']} | {tuple(x['scorer_choice'])} | "
            f"{tuple(x['clairvoyant_choice'])} | {x['scorer_expects']:.2f} | {x['clairvoyant_expects']:.2f} | "
            f"{x['difference']:+.2f} ± {x['difference_se']:.2f} |"
            for x in s["decisive"]
        ),
        "",
        f"On {better} of these {len(s['decisive'])} seeds the clairvoyant's decisive placement is worth more in",
        "expectation than the scorer's by over two standard errors; on the others it is a placement an online policy",
        "would not prefer (or is indifferent to), which wins on this trace because of the requests and departures",
        "that follow. Whether an online policy could still do better on these seeds is what the two studies below",
        "measure.",
        "",
        f"**How atypical the headline seeds are.** Over seeds {bl['seeds']} cut into {bl['blocks']} blocks of "
        f"{bl['block']}, the mean of scorer / capacity bound per seed (a lower estimate of scorer / clairvoyant: the",
        f"capacity bound is at least the clairvoyant optimum, and equal to it on {ro['clairvoyant_is_capacity']} of "
        f"the {ro['clairvoyant_seeds']} seeds where",
        f"both are computed below) is {bl['mean']:.1%} over all seeds and {bl['headline']:.1%} on the headline block;",
        f"{bl['blocks_at_or_below_headline']} block(s) of {bl['blocks']} are at or below it (the next worst is "
        f"{bl['next_worst']:.1%}) and {bl['blocks_at_least_90']} reach 90%. Per seed the ratio is at most 70% on "
        f"{bl['seeds_at_most_70']} seeds of {bl['blocks'] * bl['block']}, and on {bl['headline_at_most_70']} of the "
        f"{bl['block']} headline seeds.",
        "",
        f"**Exact best online policy, {ex['gpus']} GPUs** (`bench/mig_packing/exact.py`, {ex['events']} events):",
        f"dynamic programming over the {ex['fleet_classes']:,} fleets of layout classes (the {ex['layout_classes']}",
        "layouts of one GPU up to the symmetries of its slice geometry, which give the same future). The best",
        f"online policy serves {ex['online_optimum']:.3f} requests in expectation; the scorer "
        f"{ex['scorer_expected']:.3f} ± {ex['scorer_expected_se']:.3f} (Monte Carlo, {ex['mc_samples']:,} traces), "
        f"{ex['scorer_vs_online']:.1%} of it. Replayed on the same seeds' traces (cut to {ex['events']} events):",
        "",
        "| GPUs | policy | seeds | scorer / clairvoyant | policy / clairvoyant | scorer, policy, clairvoyant "
        "(mean served) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for who, block in (("best online (exact)", ex), (f"rollout ({ro['samples']} futures)", ro)):
        for part in ("headline", "sampled"):
            x = block[part]
            lines.append(
                f"| {block['gpus']} | {who} | {x['seeds']} | {x['scorer_vs_clairvoyant']:.1%} | "
                f"{x['policy_vs_clairvoyant']:.1%} | {x['scorer_mean']}, {x['policy_mean']}, {x['clairvoyant_mean']} |"
            )
    too = ex["too_large"]
    if too["fleet_classes"] > exact.ClassDP.MAX_FLEETS:
        lines += [
            "",
            f"**Why not exact on {too['gpus']} GPUs.** {too['fleet_classes']:,} fleet classes and "
            f"{too['successor_arrays']} successor arrays of that length ({too['successor_bytes'] / 1e9:.0f} GB as int32,",
            f"against {ex['fleet_classes']:,} at {ex['gpus']} GPUs), gathered once per event for {events_for(too['gpus'])} events:",
            f"out of reach on this machine (23 GB, 2 shared cores). {ex['gpus']} GPUs is the largest exact size.",
        ]
    lines += [
        "",
        f"**Rollout, {ro['gpus']} GPUs** (`bench/mig_packing/rollout.py`): at each request, every distinct",
        f"placement is tried against {ro['samples']} simulated futures of the generator (the scorer placing every",
        "later request, the same futures for every candidate); the one serving most on average is taken if it beats",
        "the scorer's own choice by more than two standard errors of the paired differences (without that test the",
        "sampling noise picks among near-equal placements: tried with 400 futures, it served 21.65 requests on",
        "average on seeds 100-199 against the scorer's 21.92, and 72.8% of the clairvoyant on seeds 0-9). It is an",
        "online policy and evidence of what one can do, not a bound: it departed from the scorer on "
        f"{ro['headline']['departures']} of {ro['headline']['decisions']} real choices on the headline seeds and",
        f"{ro['sampled']['departures']} of {ro['sampled']['decisions']} on seeds {ro['sampled']['seeds']}.",
        "",
        "**What is proven and what is evidence.** Exact: the clairvoyant optimum and the capacity bound on every",
        f"seed, the engine's refusals below capacity on seeds {', '.join(str(d['seed']) for d in layout)}, and the best",
        f"online policy's expected value on {ex['gpus']} GPUs with the scorer at {ex['scorer_vs_online']:.1%} of it",
        f"(up to the Monte Carlo error of the scorer's figure): no online policy serves more than {1 / ex['scorer_vs_online'] - 1:.1%}",
        "more than the scorer there in expectation. Evidence only: the exact policy replayed on fixed seeds (it is the best *in expectation*; on one",
        "fixed trace some online rule always matches the clairvoyant, so no figure on ten seeds is a bound), the",
        f"{ro['gpus']}-GPU rollout (a policy, not a bound) and the block ranking (scorer / capacity bound, a lower",
        "estimate of scorer / clairvoyant).",
        "",
        "Per headline seed (served before the first refusal):",
        "",
        f"| seed | scorer ({ex['gpus']} GPUs) | best online ({ex['gpus']}) | clairvoyant ({ex['gpus']}) "
        f"| scorer ({ro['gpus']}) | rollout ({ro['gpus']}) | clairvoyant ({ro['gpus']}) | capacity bound ({ro['gpus']}) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e, r, d in zip(ex["headline"]["runs"], ro["headline"]["runs"], dg, strict=True):
        lines.append(
            f"| {e['seed']} | {e['scorer']} | {e['policy']} | {e['clairvoyant']} | {r['scorer']} | {r['policy']} "
            f"| {r['clairvoyant']} | {d['capacity_bound']} |"
        )
    lines.append("")
    return lines


def study(model: str, weights: dict[str, int], release_p: float, args: Any) -> dict[str, Any]:
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    sample = range(100, 100 + args.sample_seeds)
    kw = {"time_limit": args.time_limit, "mc_samples": args.mc_samples, "rollout_samples": args.rollout_samples}
    diagnosis = diagnose(model, args.gpus, seeds)
    t = Tables(model, list(weights))
    gen = rollout.Generator(t, weights, release_p)
    lost = [d["seed"] for d in diagnosis if d["cause"] == "layout"]
    return {
        "diagnosis": diagnosis,
        "decisive": [decisive(t, gen, args.gpus, seed, args.decisive_samples, args.time_limit) for seed in lost],
        "blocks": blocks(model, weights, args.gpus, seeds, args.block_seeds),
        "exact": exact_study(model, weights, release_p, args.exact_gpus, seeds, sample, **kw),
        "rollout": rollout_study(model, weights, release_p, args.gpus, seeds, sample, **kw),
    }
