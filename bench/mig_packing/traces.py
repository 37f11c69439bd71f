"""The MIG packing benchmark's traces and the three ways it serves them: the engine (``served_engine``, through
``controller.placement.Engine``), first-fit, and the clairvoyant non-migrating optimum (an ILP, ``optimum_prefix``).
"""

from __future__ import annotations

import random
from typing import Any

from controller.placement import Decision, Device, Engine, Host, mig

Event = tuple[str, Any]  # ("req", profile) | ("rel", request number)

PROFILE_WEIGHTS = {
    "A100-40GB": {"1g.5gb": 4, "1g.10gb": 2, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
    "H100-80GB": {"1g.10gb": 4, "1g.20gb": 2, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
}


RELEASE_P = 0.35


def make_trace(model: str, length: int, seed: int, release_p: float = RELEASE_P) -> list[Event]:
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


def served_optimum(
    model: str, gpus: int, trace: list[Event], time_limit: float, assignment: dict[int, tuple[int, int]] | None = None
) -> tuple[int, bool]:
    """Longest servable prefix by ILP. Returns (served, proven optimal); fills ``assignment`` (request number ->
    (GPU, start)) with the solution when given one."""
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
    if assignment is not None:
        sol = h.getSolution().col_value
        for (r, g, s), v in x.items():
            if sol[v.index] > 0.5:
                assignment[r] = (g, s)
    return value, status == highspy.HighsModelStatus.kOptimal


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
