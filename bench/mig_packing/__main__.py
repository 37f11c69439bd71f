"""python -m bench.mig_packing [--seeds 10] [--first-seed 0] [--out bench/results]

Replays seeded random traces of MIG instance requests and releases on small fleets of A100 and H100 GPUs
and counts the requests served before the first refusal for: the gpufabric engine (``mig.placement_cost``:
best fit, no dead slices, most potential kept), first-fit (first GPU, lowest free start), and the exact
optimum (an ILP solved with HiGHS via highspy: the longest prefix of the trace that some fixed,
non-migrating assignment serves).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from controller.placement import Decision, Device, Engine, Host, mig

Event = tuple[str, Any]  # ("req", profile) | ("rel", request number)

PROFILE_WEIGHTS = {
    "A100-40GB": {"1g.5gb": 4, "1g.10gb": 2, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
    "H100-80GB": {"1g.10gb": 4, "1g.20gb": 2, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
}


def make_trace(model: str, length: int, seed: int, release_p: float = 0.35) -> list[Event]:
    rng = random.Random(seed)
    names = list(PROFILE_WEIGHTS[model])
    weights = list(PROFILE_WEIGHTS[model].values())
    active: list[int] = []
    n_req = 0
    trace: list[Event] = []
    while len(trace) < length:
        if active and rng.random() < release_p:
            trace.append(("rel", active.pop(rng.randrange(len(active)))))
        else:
            trace.append(("req", rng.choices(names, weights)[0]))
            active.append(n_req)
            n_req += 1
    return trace


def served_engine(model: str, gpus: int, trace: list[Event]) -> int:
    per_host = 8
    hosts = []
    for h in range((gpus + per_host - 1) // per_host):
        n = min(per_host, gpus - h * per_host)
        devs = [Device(f"GPU-{h}-{i}", i, model, 0, mode="mig") for i in range(n)]
        hosts.append(Host(f"h{h}", "b", "static", "r", "a", on_demand_mig=True, devices=devs))
    e = Engine(hosts)
    claims: dict[int, str] = {}
    served = 0
    for kind, arg in trace:
        if kind == "rel":
            e.release(claims.pop(arg))
            continue
        d = e.decide({"slices": [{"kind": "mig", "profile": arg}]}, "bench")
        if not isinstance(d, Decision):
            return served
        claims[served] = e.claim(d).id
        served += 1
    return served


def served_first_fit(model: str, gpus: int, trace: list[Event]) -> int:
    layouts: list[mig.Layout] = [() for _ in range(gpus)]
    where: dict[int, tuple[int, int, int, str]] = {}
    served = 0
    for kind, arg in trace:
        if kind == "rel":
            g, s, n, p = where.pop(arg)
            layouts[g] = mig.remove(layouts[g], s, n, p)
            continue
        for g in range(gpus):
            pl = mig.first_placement(model, layouts[g], arg)
            if pl is not None:
                layouts[g] = mig.add(layouts[g], pl[0], pl[1], arg)
                where[served] = (g, pl[0], pl[1], arg)
                break
        else:
            return served
        served += 1
    return served


def served_optimum(model: str, gpus: int, trace: list[Event], time_limit: float) -> tuple[int, bool]:
    """Longest servable prefix by ILP. Returns (served, proven optimal)."""
    import highspy

    geom = mig.geometry(model)
    assert geom is not None
    reqs: list[str] = []
    arrive: list[int] = []
    leave: dict[int, int] = {}
    for t, (kind, arg) in enumerate(trace):
        if kind == "req":
            reqs.append(arg)
            arrive.append(t)
        else:
            leave[arg] = t
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", time_limit)
    x: dict[tuple[int, int, int], Any] = {}
    y = [h.addBinary() for _ in reqs]
    for r, p in enumerate(reqs):
        prof = geom.profiles[p]
        opts = []
        for g in range(gpus):
            for s, _n in prof.placements:
                x[(r, g, s)] = v = h.addBinary()
                opts.append(v)
        h.addConstr(h.qsum(opts) == y[r])
        if r:
            h.addConstr(y[r] <= y[r - 1])
    # Conflicts only grow when a request arrives: check the active set at each arrival.
    for r_now, t in enumerate(arrive):
        active = [r for r in range(r_now + 1) if leave.get(r, len(trace)) > t]
        for g in range(gpus):
            for m in range(geom.memory_slices):
                cover = [x[(r, g, s)] for r in active for s, n in geom.profiles[reqs[r]].placements if s <= m < s + n]
                if len(cover) > 1:
                    h.addConstr(h.qsum(cover) <= 1)
            compute = [
                geom.profiles[reqs[r]].slices * x[(r, g, s)]
                for r in active
                for s, _n in geom.profiles[reqs[r]].placements
            ]
            if compute:
                h.addConstr(h.qsum(compute) <= geom.compute_slices)
            for pname, prof in geom.profiles.items():
                same = [x[(r, g, s)] for r in active if reqs[r] == pname for s, _n in prof.placements]
                if len(same) > prof.max_instances:
                    h.addConstr(h.qsum(same) <= prof.max_instances)
    h.maximize(h.qsum(y))
    status = h.getModelStatus()
    value = round(h.getInfo().objective_function_value)
    return value, status == highspy.HighsModelStatus.kOptimal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mig_packing")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--gpus", type=int, default=4, help="fleet size for the exact comparison")
    ap.add_argument("--large-gpus", type=int, default=64, help="fleet size for engine vs first-fit only")
    ap.add_argument("--time-limit", type=float, default=60.0, help="ILP time limit per instance (s)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for model in PROFILE_WEIGHTS:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            trace = make_trace(model, 14 * args.gpus + 20, seed)
            t0 = time.perf_counter()
            eng = served_engine(model, args.gpus, trace)
            ff = served_first_fit(model, args.gpus, trace)
            opt, proven = optimum_prefix(model, args.gpus, trace, max(eng, ff), args.time_limit)
            big = make_trace(model, 14 * args.large_gpus + 50, 1000 + seed)
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "gpus": args.gpus,
                    "engine": eng,
                    "first_fit": ff,
                    "optimum": opt,
                    "optimum_proven": proven,
                    "large_gpus": args.large_gpus,
                    "large_engine": served_engine(model, args.large_gpus, big),
                    "large_first_fit": served_first_fit(model, args.large_gpus, big),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary: dict[str, Any] = {}
    for model in PROFILE_WEIGHTS:
        rs = [r for r in rows if r["model"] == model]
        summary[model] = {
            "engine_vs_optimum": round(statistics.fmean(r["engine"] / r["optimum"] for r in rs), 4),
            "first_fit_vs_optimum": round(statistics.fmean(r["first_fit"] / r["optimum"] for r in rs), 4),
            "engine_min_vs_optimum": round(min(r["engine"] / r["optimum"] for r in rs), 4),
            "all_optima_proven": all(r["optimum_proven"] for r in rs),
            "large_engine_vs_first_fit": round(
                statistics.fmean(r["large_engine"] / max(1, r["large_first_fit"]) for r in rs), 4
            ),
        }
    cmd = ("python -m bench.mig_packing " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    res = {
        "command": cmd,
        "python": platform.python_version(),
        "solver": "ILP (HiGHS via highspy)",
        "target": ">= 95% of the optimum",
        "summary": summary,
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mig_packing.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# MIG packing benchmark",
        "",
        f"Command: `{cmd}` (from the repo root; Python {res['python']}).",
        "",
        "Seeded random traces of MIG instance requests (weighted towards small profiles) and releases (35% of",
        f"events) on {args.gpus} empty MIG-enabled GPUs; the score is the number of requests served before the first",
        "refusal. The optimum is exact: an ILP (HiGHS via highspy) for the longest prefix of the trace that one",
        "fixed assignment of (GPU, placement) per request serves, with memory-slice, compute-slice and",
        "max-instance constraints at every arrival, solved on growing prefixes of the trace until the ILP leaves a",
        "request of the prefix unserved (so the optimum is never capped by the prefix). Engine vs first-fit also on",
        f"{args.large_gpus} GPUs (no optimum).",
        "",
        "| model | engine / optimum (mean) | engine / optimum (worst seed) | first-fit / optimum | optima proven | "
        f"engine / first-fit on {args.large_gpus} GPUs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model, s in summary.items():
        lines.append(
            f"| {model} | {s['engine_vs_optimum']:.1%} | {s['engine_min_vs_optimum']:.1%} | "
            f"{s['first_fit_vs_optimum']:.1%} | {s['all_optima_proven']} | {s['large_engine_vs_first_fit']:.3f} |"
        )
    lines += ["", "Per seed (served before first refusal):", "", "| model | seed | engine | first-fit | optimum |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['engine']} | {r['first_fit']} | {r['optimum']} |")
    lines.append("")
    (args.out / "mig_packing.md").write_text("\n".join(lines))
    print(json.dumps(summary, indent=2))
    return 0


def optimum_prefix(model: str, gpus: int, trace: list[Event], lower: int, time_limit: float) -> tuple[int, bool]:
    """The optimum over the whole trace, solved on growing prefixes (small ILPs first).

    A prefix holding ``k`` requests proves the optimum only if the ILP serves fewer than ``k`` of them: when it
    serves them all, the optimum may be longer and the prefix is doubled. (Solving one fixed prefix and taking
    its answer would cap the optimum at the prefix.)
    """
    n_req = sum(1 for kind, _ in trace if kind == "req")
    k = lower + 12
    while True:
        k = min(k, n_req)
        opt, proven = served_optimum(model, gpus, trace[: _prefix_len(trace, k)], time_limit)
        if not proven:
            opt = max(opt, lower)
        if opt < k or k >= n_req:
            return opt, proven
        k *= 2


def _prefix_len(trace: list[Event], n_requests: int) -> int:
    seen = 0
    for i, (kind, _) in enumerate(trace):
        if kind == "req":
            seen += 1
            if seen > n_requests:
                return i
    return len(trace)


if __name__ == "__main__":
    raise SystemExit(main())
