"""python -m bench.placement_vs_openstack [--sizes 1000,10000] [--runs 5] [--out bench/results] [--skip-openstack]

Starts a real OpenStack Placement (openstack-placement 16.0.0, sqlite, noauth2) from the services virtualenv
(devservices/openstack/; built on first use), loads each fleet size by direct SQL, and times
``GET /allocation_candidates`` (median of ``--runs``, full response read). Then times gpufabric's placement
decision for the same request on the same fleet in this process (median of many decisions), and the same
question asked of a real gpufabric controller over its REST API (``POST /v1/placements:dry-run``), plus lease
create + release pairs (``bench/placement_vs_openstack/rest.py``; ``--db sqlite`` by default, ``--db postgres``
for a fresh schema of ``--postgres``). Writes ``placement_vs_openstack.json`` and ``.md`` under ``--out``.
``--skip-openstack`` runs gpufabric's sides alone (no ratios); ``--skip-rest`` leaves the controller out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.placement_vs_openstack.fleets import (
    GPU_TRAIT,
    GPUFABRIC_REQUEST,
    GPUS_PER_HOST,
    VGPUS_PER_GPU,
    gpufabric_fleet,
    load_placement_fleet,
)
from bench.placement_vs_openstack.rest import DEFAULT_POSTGRES, PROFILE_HZ, rest_side
from controller.placement import Decision, Engine
from devservices import openstack

# (label, query string). The first is the headline: the exact request of the issue.
QUERIES = [
    ("VGPU:1", "resources=VGPU:1"),
    ("VGPU:1&limit=1", "resources=VGPU:1&limit=1"),
    (f"VGPU:1&required={GPU_TRAIT}&limit=1", f"resources=VGPU:1&required={GPU_TRAIT}&limit=1"),
]
HEADLINE = "VGPU:1"
TARGET_RATIO = 100
TARGET_SIZE = 10_000
# Goals of the REST side: the dry-run over HTTP against Placement's allocation_candidates over HTTP, and lease
# create + release pairs per second (the better of sequential and concurrent clients), both at TARGET_SIZE.
TARGET_REST_RATIO = 1000
TARGET_PAIRS_PER_S = 500


def _time_placement(client: httpx.Client, query: str, runs: int, expect: int | None) -> dict[str, Any]:
    times: list[float] = []
    size = count = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        resp = client.get(f"/allocation_candidates?{query}")
        body = resp.content
        times.append((time.perf_counter() - t0) * 1000)
        resp.raise_for_status()
        size = len(body)
        count = len(json.loads(body)["allocation_requests"])
    if expect is not None and count != expect:
        raise AssertionError(f"{query}: {count} candidates, expected {expect}: the fleet did not load as intended")
    return {
        "median_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "runs": runs,
        "candidates": count,
        "response_bytes": size,
    }


def placement_side(size: int, runs: int, venv: Path, workdir: Path) -> dict[str, Any]:
    base = workdir / f"placement-{size}"
    with openstack.placement_service(base, venv) as service:
        t0 = time.perf_counter()
        rows = load_placement_fleet(base / "placement.sqlite", size)
        load_s = time.perf_counter() - t0
        out: dict[str, Any] = {"roots": size, "load_rows": rows, "load_s": round(load_s, 2), "queries": {}}
        with httpx.Client(base_url=service.url, headers=openstack.PLACEMENT_HEADERS, timeout=600) as client:
            # One warm-up request (the first one also syncs the standard traits) outside the measured runs.
            client.get("/allocation_candidates?resources=VGPU:1&limit=1").raise_for_status()
            for label, query in QUERIES:
                expect = size * GPUS_PER_HOST if "limit" not in query else 1
                out["queries"][label] = _time_placement(client, query, runs, expect)
                q = out["queries"][label]
                print(f"  placement  {size:>6} roots  {label:<40} median {q['median_ms']:>9.1f} ms", flush=True)
    return out


def gpufabric_side(size: int, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine = Engine(gpufabric_fleet(size))
    build_s = time.perf_counter() - t0
    gc.collect()
    for _ in range(20):  # warm-up
        engine.decide(GPUFABRIC_REQUEST, "bench")
    times: list[float] = []
    placed = 0
    for _ in range(repeats):
        t = time.perf_counter()
        d = engine.decide(GPUFABRIC_REQUEST, "bench")
        times.append((time.perf_counter() - t) * 1000)
        placed += isinstance(d, Decision)
    if placed != repeats:
        raise AssertionError(f"gpufabric placed {placed} of {repeats} requests on a free fleet")
    times.sort()
    out = {
        "hosts": size,
        "gpus": size * GPUS_PER_HOST,
        "request": GPUFABRIC_REQUEST,
        "index_build_s": round(build_s, 2),
        "repeats": repeats,
        "median_ms": round(statistics.median(times), 4),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 4),
    }
    print(
        f"  gpufabric  {size:>6} hosts  decide 1 x vGPU on A100        median {out['median_ms']:>9.3f} ms", flush=True
    )
    return out


def _git() -> dict[str, Any]:
    """The commit measured, and the files under controller/ that differed from it (uncommitted work)."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line.split(maxsplit=1)[-1] for line in run("status", "--porcelain", "--", "controller").splitlines()]
    return {"commit": run("rev-parse", "--short", "HEAD").strip(), "controller_uncommitted": changed}


def _machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other work on the machine skews both sides; recorded so a noisy run can be recognised.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "openstack_pins": list(openstack.PINS),
        "git": _git(),
    }


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:,.3f} ms" if x < 10 else f"{x:,.1f} ms"


def _placement_markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    lines = [
        f"Fleet, both sides: N hosts, each with {GPUS_PER_HOST} A100 GPUs offering {VGPUS_PER_GPU} vGPUs "
        "(Placement: root provider VCPU=64, MEMORY_MB=512000 + 2 child pGPU providers, VGPU total=8, trait "
        f"{GPU_TRAIT}; loaded by direct SQL). Nothing allocated. "
        f"OpenStack: {', '.join(m['openstack_pins'])} (sqlite, noauth2, stdlib threaded WSGI server).",
        "",
        "Placement: wall time of `GET /allocation_candidates?...` from a local httpx client, response read "
        f"completely, median of {result['runs']} runs after one warm-up. gpufabric: `Engine.decide("
        f"{json.dumps(GPUFABRIC_REQUEST)})` in process (the answer: one ranked host and GPU; no claim), median of "
        "repeated decisions.",
        "",
        "| hosts | Placement query | Placement median | candidates (bytes) | gpufabric median | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for size, row in result["sizes"].items():
        if not row.get("placement"):
            continue
        g = row["gpufabric"]
        for label, q in row["placement"]["queries"].items():
            ratio = row["ratios"][label]
            lines.append(
                f"| {int(size):,} | `{label}` | {q['median_ms']:,.1f} ms | {q['candidates']:,} ({q['response_bytes']:,}) "
                f"| {g['median_ms']:.3f} ms | {ratio:,.0f}x |"
            )
    lines += [
        "",
        "Setup costs (not in the timings above):",
        "",
        "| hosts | Placement SQL load | gpufabric index build |",
    ]
    lines.append("| --- | --- | --- |")
    for size, row in result["sizes"].items():
        if row.get("placement"):
            lines.append(f"| {int(size):,} | {row['placement']['load_s']} s | {row['gpufabric']['index_build_s']} s |")
    verdict = result.get("target")
    if verdict:
        lines += [
            "",
            f"Target: at {TARGET_SIZE:,} hosts, gpufabric at least {TARGET_RATIO}x faster on `{HEADLINE}`: "
            f"**{'met' if verdict['met'] else 'NOT met'}** ({verdict['ratio']:,.0f}x).",
        ]
    lines += [
        "",
        "Caveats: Placement answers a different shape of question (every candidate, then the caller's scheduler "
        "picks; `limit` only trims the response, the cost is in building all candidate trees) over HTTP with its "
        "database in sqlite; gpufabric answers with one ranked choice from an in-memory index. That difference is "
        "the point of the comparison, but it is not a like-for-like algorithm race. gpufabric's claim (an atomic "
        "store write) is not included; neither is Placement's `PUT /allocations`. Over HTTP on both sides: see "
        "the next section.",
        "",
    ]
    return lines


def _rest_markdown(result: dict[str, Any]) -> list[str]:
    rows = [(int(size), row, r) for size, row in result["sizes"].items() for r in (row.get("rest") or {}).values()]
    if not rows:
        return []
    opts = result["rest_options"]
    lines = [
        "## The tenant side over HTTP: gpufabric's REST API",
        "",
        "Controller: a real `gpufabric controller serve` process (one uvicorn worker), log level "
        f"{opts['controller_log_level']}, on the database named in each row (SQLite: a file in WAL mode). Before it "
        "starts, the fleet is written to the store in bulk: per host, the `hosts` and `devices` rows an agent's "
        "first inventory report leaves (`store_inventory` on the same `Inventory`, status `ready`), so its "
        "placement index is built from the store at start-up. Tenant token from `gpufabric admin token create "
        "--role tenant`; the tenant has no quota rows (nothing limits it).",
        "",
        f"Goals, at {TARGET_SIZE:,} hosts: the REST dry-run at least {TARGET_REST_RATIO:,}x faster than Placement's "
        f"`allocation_candidates` (`{HEADLINE}`), and at least {TARGET_PAIRS_PER_S} lease create + release pairs/s "
        "(the better of sequential and concurrent clients). Verdicts below the tables.",
        "",
        f"Dry-run: `POST /v1/placements:dry-run` with `{json.dumps(GPUFABRIC_REQUEST)}` (the same question, the "
        "same fleet: each GPU offers 8 x A100-10C; the answer carries the ranked host and the filter funnel), "
        f"{opts['requests']} sequential requests on one keep-alive httpx client after {opts['warmup']} warm-up "
        "requests; wall time per request, response read. req/s = requests / wall time. Ratio = Placement median "
        f"of `{HEADLINE}` (above) / REST p50. Server CPU: the controller process's user+system time per request.",
        "",
        "| hosts | database | REST dry-run p50 | p99 | req/s | server CPU / req | in-process median | "
        f"Placement `{HEADLINE}` | ratio vs Placement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, row, r in rows:
        d = r["dry_run"]
        q = (row.get("placement") or {}).get("queries", {}).get(HEADLINE)
        ratio = r.get("ratios", {}).get(HEADLINE)
        lines.append(
            f"| {size:,} | {r['database']} | {_ms(d['p50_ms'])} | {_ms(d['p99_ms'])} | {d['requests_per_s']:,.0f} | "
            f"{_ms(d['server_cpu_ms_per_request'])} | {_ms(row['gpufabric']['median_ms'])} | "
            f"{_ms(q['median_ms']) if q else '—'} | {f'{ratio:,.0f}x' if ratio else '—'} |"
        )
    others = [(size, r) for size, _, r in rows if r.get("ratios")]
    if others:
        lines += ["", "Ratios for the other Placement queries (Placement median / REST dry-run p50): "]
        lines[-1] += (
            "; ".join(
                f"{size:,} hosts, {r['database']}: "
                + ", ".join(f"`{k}` {v:,.0f}x" for k, v in r["ratios"].items() if k != HEADLINE)
                for size, r in others
            )
            + "."
        )
    lease = rows[0][2]["lease_pairs"]["request"]
    lines += [
        "",
        f"Lease pairs: `POST /v1/leases` with `{json.dumps(lease)}` (must answer 201, `ready`), then `DELETE "
        "/v1/leases/{id}` (200, `released`), on the same hosts with their GPUs given whole instead of as vGPUs "
        "(static backend: a vGPU lease only becomes `ready` through a hypervisor backend, Nova, which this bench "
        "does not run). The controller is restarted on that fleet; a few pairs warm it up. "
        f"{opts['pairs']} pairs sequentially on one keep-alive client, then {opts['pairs']} over "
        f"{opts['clients']} threads, each with its own client. pairs/s = completed pairs / wall time; latencies "
        "per pair (create + release) and per request.",
        "",
        "| hosts | database | clients | pairs/s | pair p50 | pair p99 | create p50 / p99 | release p50 / p99 | "
        "server CPU / pair | claim conflicts retried | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, _, r in rows:
        for mode in ("sequential", "concurrent"):
            x = r["lease_pairs"].get(mode)
            if not x:
                continue
            conflicts = x["counters"].get("lease_claim_conflicts_retried", 0)
            errors = sum(x["errors"].values())
            lines.append(
                f"| {size:,} | {r['database']} | {x['clients']} | {x['pairs_per_s']:,.1f} | {_ms(x['pair']['p50_ms'])} "
                f"| {_ms(x['pair']['p99_ms'])} | {_ms(x['create']['p50_ms'])} / {_ms(x['create']['p99_ms'])} | "
                f"{_ms(x['release']['p50_ms'])} / {_ms(x['release']['p99_ms'])} | "
                f"{_ms(x['server_cpu_ms_per_pair'])} | {conflicts} | "
                f"{errors}{' ' + json.dumps(x['errors']) if errors else ''} |"
            )
    lines += [
        "",
        "Setup (not in the timings; controller start: spawn to `/healthz` answering, imports and the index built "
        "from the store included):",
        "",
        "| hosts | database | store load, vGPU fleet | controller start | store load, whole-GPU fleet "
        "| controller start |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for size, _, r in rows:
        lines.append(
            f"| {size:,} | {r['database']} | {r['fleet_vgpu']['load_s']} s | {r['dry_run']['controller_start_s']} s "
            f"| {r['fleet_gpu']['load_s']} s | {r['lease_start_s']} s |"
        )
    lines += _targets_markdown(result)
    lines += _where_time_goes(rows)
    return lines


def _targets_markdown(result: dict[str, Any]) -> list[str]:
    targets = result.get("rest_targets")
    if not targets:
        return []
    lines = ["", f"### Goals at {TARGET_SIZE:,} hosts", ""]
    for label, t in targets.items():
        d, p = t["dry_run"], t["lease_pairs"]
        if d["ratio"] is None:
            lines.append(
                f"- {label}: REST dry-run at least {TARGET_REST_RATIO:,}x faster than Placement's "
                f"`allocation_candidates` (`{HEADLINE}`): not measured (Placement skipped in this run)."
            )
        else:
            lines.append(
                f"- {label}: REST dry-run at least {TARGET_REST_RATIO:,}x faster than Placement's "
                f"`allocation_candidates` (`{HEADLINE}`): **{'met' if d['met'] else 'NOT met'}** "
                f"({d['ratio']:,.0f}x: {d['placement_ms']:,.1f} ms / {d['rest_p50_ms']:.3f} ms)."
            )
        conc = f", {p['concurrent']:,.1f} with {p['clients']} clients" if p["concurrent"] is not None else ""
        lines.append(
            f"- {label}: at least {TARGET_PAIRS_PER_S:,} lease create + release pairs/s: "
            f"**{'met' if p['met'] else 'NOT met'}** ({p['sequential']:,.1f} pairs/s sequential{conc})."
        )
    return lines


def _where_time_goes(rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    largest = max(size for size, _, _ in rows)
    lines: list[str] = []
    for size, row, r in rows:
        if size != largest:
            continue
        d = r["dry_run"]
        seq = r["lease_pairs"]["sequential"]
        lines += [
            "",
            f"### Where the time goes ({size:,} hosts, {r['database']})",
            "",
            f"- Dry-run: the decision itself takes {_ms(row['gpufabric']['median_ms'])} in process; over HTTP the "
            f"p50 is {_ms(d['p50_ms'])}, of which the controller spends {_ms(d['server_cpu_ms_per_request'])} of CPU "
            "per request (the rest: the client, the loopback, and waiting for a CPU on a shared machine). The REST "
            "answer also computes the filter funnel (`explain`), which the in-process figure leaves out.",
            f"- Lease pairs: {_ms(seq['pair']['p50_ms'])} per create + release pair at p50 sequentially, "
            f"{_ms(seq['server_cpu_ms_per_pair'])} of controller CPU per pair. {TARGET_PAIRS_PER_S} pairs/s leaves "
            f"{1000 / TARGET_PAIRS_PER_S:.1f} ms per pair, and one controller process runs Python on one core at a "
            "time (the GIL).",
        ]
        floor = r.get("floor")
        if floor:
            h, a = floor["healthz"], floor["authenticated_read"]
            two = 2 * a["server_cpu_ms_per_request"]
            lines.append(
                f"- The floor under any lease: `GET /healthz` (HTTP and middleware, no token, no store) costs "
                f"{_ms(h['server_cpu_ms_per_request'])} of controller CPU per request (p50 {_ms(h['p50_ms'])}); "
                f"`GET /v1/leases/{{id}}` (the tenant's token checked, one read of a lease and its transitions, "
                f"the answer validated and serialised) {_ms(a['server_cpu_ms_per_request'])} (p50 {_ms(a['p50_ms'])}). "
                f"A pair is two such requests that also write: even if create and release wrote nothing, two "
                f"authenticated requests with one read each cost {_ms(two)} of CPU, at most "
                f"{1000 / two:,.0f} pairs/s on one core, while the pair's own work (claim, provisioning, release: "
                f"{_ms(seq['server_cpu_ms_per_pair'] - two)} beyond that floor) is durable store transactions. "
                f"The bench's client runs on the same 2 cores ({_ms(a['p50_ms'] - a['server_cpu_ms_per_request'])} "
                "of each request's wall time is not the controller's CPU)."
            )
        prof = r.get("profile") or {}
        for key, title in (("dry_run", "dry-run"), ("lease_pairs", "lease pairs")):
            p = prof.get(key)
            if not p or not p["busy_samples"]:
                continue
            layers = ", ".join(f"{k} {v:.0f}%" for k, v in p["busy_pct_by_layer"].items() if v >= 1)
            funcs = ", ".join(f"`{k.split(' (')[0]}` {v:.0f}%" for k, v in p["busy_pct_in_gpufabric_functions"].items())
            lines.append(
                f"- py-spy on an extra, untimed pass of the {title} ({p['busy_samples']:,} busy samples at "
                f"{PROFILE_HZ} Hz, non-blocking), by layer (innermost frame): {layers}. gpufabric functions, "
                f"inclusive: {funcs}."
            )
    return lines


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    git = m.get("git") or {}
    dirty = git.get("controller_uncommitted") or []
    lines = [
        "# gpufabric placement vs OpenStack Placement",
        "",
        f"Command: `{result['command']}` (from the repo root).",
        "",
        f"Machine: {m['nproc']} cores, Python {m['python']}, {m['platform']}, {m['date']}, "
        f"load average {m.get('loadavg_1m_at_start')} at start. Code: commit {git.get('commit', '?')}"
        + (f" with uncommitted changes under controller/ ({', '.join(dirty)})." if dirty else ".")
        + " The machine is shared: other work skews every figure.",
        "",
    ]
    if any(row.get("placement") for row in result["sizes"].values()):
        lines += _placement_markdown(result)
    else:
        lines += [
            "OpenStack Placement not run (`--skip-openstack`): no ratios. gpufabric in process, `Engine.decide("
            f"{json.dumps(GPUFABRIC_REQUEST)})`: "
            + ", ".join(
                f"{int(size):,} hosts {row['gpufabric']['median_ms']:.3f} ms" for size, row in result["sizes"].items()
            )
            + ".",
            "",
        ]
    lines += _rest_markdown(result)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.placement_vs_openstack", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated fleet sizes (hosts)")
    parser.add_argument("--runs", type=int, default=5, help="Placement requests per query (median)")
    parser.add_argument("--repeats", type=int, default=500, help="gpufabric decisions per size (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--skip-openstack", action="store_true", help="do not run Placement (no ratios)")
    parser.add_argument("--skip-rest", action="store_true", help="do not run the controller over REST")
    parser.add_argument(
        "--db",
        action="append",
        choices=["sqlite", "postgres"],
        help="REST side's database (repeatable; default sqlite)",
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="URL for --db postgres: a fresh schema per size, dropped after"
    )
    parser.add_argument("--requests", type=int, default=1000, help="REST dry-run requests per size (sequential)")
    parser.add_argument("--warmup", type=int, default=20, help="REST dry-run requests before the timed ones")
    parser.add_argument(
        "--pairs", type=int, default=500, help="lease create+release pairs per size: sequentially, then over --clients"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent lease clients (threads); 1: sequential only")
    parser.add_argument("--controller-log-level", default="WARNING", help="GPUFABRIC_LOG_LEVEL of the controller")
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="after the timed REST runs, py-spy one more (untimed) pass of each phase (py-spy on PATH or $PY_SPY); "
        "raw stacks to PREFIX-<size>-<db>-<phase>.txt, a summary in the results",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    dbs = args.db or ["sqlite"]

    venv: Path | None = None
    if not args.skip_openstack:
        t0 = time.perf_counter()
        venv = openstack.create_venv(quiet=False)
        print(f"services virtualenv {venv} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    result: dict[str, Any] = {
        "command": shlex.join(
            ["python", "-m", "bench.placement_vs_openstack", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": _machine(),
        "runs": args.runs,
        "sizes": {},
    }
    if not args.skip_rest:
        result["rest_options"] = {
            "databases": dbs,
            "requests": args.requests,
            "warmup": args.warmup,
            "pairs": args.pairs,
            "clients": args.clients,
            "controller_log_level": args.controller_log_level,
        }
    with tempfile.TemporaryDirectory(prefix="gpufabric-bench-placement-") as tmp:
        for size in sizes:
            row: dict[str, Any] = {"placement": None}
            if venv is not None:
                row["placement"] = placement_side(size, args.runs, venv, Path(tmp))
            row["gpufabric"] = gpufabric_side(size, args.repeats)
            if row["placement"]:
                queries = row["placement"]["queries"]
                row["ratios"] = {label: q["median_ms"] / row["gpufabric"]["median_ms"] for label, q in queries.items()}
                for label, r in row["ratios"].items():
                    print(f"  ratio      {size:>6}        {label:<40} {r:>9,.0f}x", flush=True)
            if not args.skip_rest:
                row["rest"] = {}
                for kind in dbs:
                    rest = rest_side(
                        size,
                        kind,
                        args.postgres,
                        Path(tmp),
                        requests=args.requests,
                        warmup=args.warmup,
                        pairs=args.pairs,
                        clients=args.clients,
                        log_level=args.controller_log_level,
                        profile=args.profile,
                    )
                    if row["placement"]:
                        p50 = rest["dry_run"]["p50_ms"]
                        rest["ratios"] = {label: q["median_ms"] / p50 for label, q in queries.items()}
                        for label, r in rest["ratios"].items():
                            print(f"  REST ratio {size:>6}  {rest['database']:<10} {label:<40} {r:>9,.0f}x", flush=True)
                    row["rest"][rest["database"]] = rest
            result["sizes"][str(size)] = row
    target_row = result["sizes"].get(str(TARGET_SIZE))
    if target_row and target_row["placement"]:
        ratio = target_row["ratios"][HEADLINE]
        result["target"] = {
            "hosts": TARGET_SIZE,
            "min_ratio": TARGET_RATIO,
            "ratio": ratio,
            "met": ratio >= TARGET_RATIO,
        }
    if target_row and target_row.get("rest"):
        result["rest_targets"] = {}
        for label, rest in target_row["rest"].items():
            ratio = rest.get("ratios", {}).get(HEADLINE)
            seq = rest["lease_pairs"]["sequential"]["pairs_per_s"]
            conc = rest["lease_pairs"]["concurrent"]
            best = max(seq, conc["pairs_per_s"] if conc else 0.0)
            result["rest_targets"][label] = {
                "hosts": TARGET_SIZE,
                "dry_run": {
                    "min_ratio": TARGET_REST_RATIO,
                    "query": HEADLINE,
                    "placement_ms": target_row["placement"]["queries"][HEADLINE]["median_ms"] if ratio else None,
                    "rest_p50_ms": rest["dry_run"]["p50_ms"],
                    "ratio": ratio,
                    "met": None if ratio is None else ratio >= TARGET_REST_RATIO,
                },
                "lease_pairs": {
                    "min_pairs_per_s": TARGET_PAIRS_PER_S,
                    "sequential": seq,
                    "concurrent": conc["pairs_per_s"] if conc else None,
                    "clients": conc["clients"] if conc else 1,
                    "met": best >= TARGET_PAIRS_PER_S,
                },
            }

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "placement_vs_openstack.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "placement_vs_openstack.md").write_text(_markdown(result))
    print(f"wrote {args.out / 'placement_vs_openstack.json'} and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
