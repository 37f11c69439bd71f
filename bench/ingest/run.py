"""Ingest benchmark: many synthetic agents reporting inventories and heartbeats to one controller.

    python -m bench.ingest --db sqlite --db postgres --hosts 3000 --duration 30 --procs 1 --concurrency 64

The controller is the real thing, in its own process: a fresh database is migrated and a bootstrap
token minted with the CLI (``gpufabric controller db upgrade`` / ``gpufabric admin token create``),
then ``gpufabric controller serve`` runs it (one uvicorn process). ``--hosts``
synthetic 8-GPU hosts register through the API with their own credentials and send a first full
inventory (setup, not measured). The load generators are separate processes (``--procs``), each an
asyncio loop with keep-alive connections (aiohttp), ``--concurrency`` in-flight requests in all.

The mix follows the agent protocol (``agent/runner.py``): each request picks the next host of the
process's share and sends

* a heartbeat carrying the unchanged inventory hash (``--heartbeat-pct``, default 94 %),
* a full inventory report with unchanged content, as an agent does after a restart (4 %),
* a full report whose content changed (2 %): one GPU's health flips, so host and one device row change.

Closed loop by default (saturation throughput at that concurrency); ``--rate R`` paces the offered
load to R requests/s in total (open loop, latency measured from the scheduled send time). Prints and
records sustained reports/s and p50/p99 per kind in ``bench/results/ingest.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results"
KINDS = ("heartbeat", "report_unchanged", "report_changed")


def inventory_doc(hostname: str, variant: int) -> dict[str, Any]:
    """An 8-GPU H100 host; odd variants have GPU 0 degraded (a content change)."""
    from drivers.contract.inventory import Gpu, GpuHealth, HostIdentity, Inventory, MigState, PciInfo

    inv = Inventory(
        host=HostIdentity(hostname=hostname, agent_version="bench", simulated=True),
        driver_version="570.00",
        cuda_driver_version="12.8",
        gpus=[
            Gpu(
                index=i,
                uuid=f"GPU-{hostname}-{i}",
                name="NVIDIA H100 80GB HBM3",
                pci=PciInfo(bus_id=f"00000000:{i + 16:02X}:00.0", device_id="0x233010DE"),
                architecture="hopper",
                compute_capability="9.0",
                memory_total_mib=81559,
                mig=MigState(capable=True, current=False, state="disabled"),
                health=GpuHealth(state="degraded" if (i == 0 and variant % 2) else "healthy"),
            )
            for i in range(8)
        ],
    )
    return inv.model_dump(mode="json")


HOST_MARK = "__HOST__"


def dict_hash(doc: dict[str, Any]) -> str:
    """``inventory_content_hash`` of a model-dumped inventory, without building the model."""
    from drivers.contract.protocol import _VOLATILE_GPU_FIELDS

    data = {k: v for k, v in doc.items() if k != "collected_at"}
    data["gpus"] = [{k: v for k, v in g.items() if k not in _VOLATILE_GPU_FIELDS} for g in data["gpus"]]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---- controller process -------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> str:
    exe = shutil.which("gpufabric", path=str(Path(sys.executable).parent)) or "gpufabric"
    out = subprocess.run([exe, *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout


@dataclass
class Controller:
    url: str
    proc: subprocess.Popen[bytes]
    bootstrap: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def controller_env(database_url: str, env_extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "GPUFABRIC_DATABASE_URL": database_url,
        "GPUFABRIC_LOG_LEVEL": "WARNING",
        "GPUFABRIC_HEARTBEAT_TIMEOUT_S": "600",
        **env_extra,
    }


def prepare_database(database_url: str, env_extra: dict[str, str]) -> str:
    """Migrate with the CLI and mint a bootstrap token; returns the token."""
    env = controller_env(database_url, env_extra)
    _cli("controller", "db", "upgrade", env=env)
    token = json.loads(
        _cli("admin", "token", "create", "--role", "agent-bootstrap", "--name", "bench", "--json", env=env)
    )
    return str(token["token"])


def start_controller(
    database_url: str, port: int, env_extra: dict[str, str], bootstrap: str, workers: int
) -> Controller:
    env = controller_env(database_url, env_extra)
    exe = shutil.which("gpufabric", path=str(Path(sys.executable).parent)) or "gpufabric"
    cmd = [exe, "controller", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300  # a worker loads the whole fleet into its placement index first
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("controller did not start")
        time.sleep(0.2)
    return Controller(url=url, proc=proc, bootstrap=bootstrap)


def bulk_register(database_url: str, names: list[str]) -> dict[str, str]:
    """Register hosts through the store, as if each had registered and sent its first report: host rows with the
    stored inventory (hash, status ready, last_seen now), their 8 device rows and an agent credential each. For
    fleets of 100,000, where 100,000 HTTP registrations would take longer than the run."""
    from sqlalchemy import insert, select, update

    from controller.auth.tokens import AGENT_CREDENTIAL_PREFIX, issue
    from controller.store.db import Database
    from controller.store.models import AgentCredential, Device, Host

    db = Database(database_url, pool_size=2)
    now = datetime.now(UTC)
    creds: dict[str, str] = {}
    template = json.dumps(inventory_doc(HOST_MARK, 0))
    try:
        for i in range(0, len(names), 2000):
            chunk = names[i : i + 2000]
            with db.engine.begin() as conn:
                rows = []
                for name in chunk:
                    doc = json.loads(template.replace(HOST_MARK, name))
                    rows.append(
                        {
                            "hostname": name, "status": "ready", "admin_state": "active", "health": "healthy",
                            "labels": {}, "agent_version": "bench", "simulated": True, "registered_at": now,
                            "last_seen": now, "inventory_generation": 1, "inventory_hash": dict_hash(doc),
                            "inventory": doc, "inventory_at": now, "placement_version": 0, "change_seq": 0,
                        }
                    )  # fmt: skip
                conn.execute(insert(Host), rows)
                ids = dict(conn.execute(select(Host.hostname, Host.id).where(Host.hostname.in_(chunk))).all())
                devices, credentials = [], []
                for name in chunk:
                    for g in range(8):
                        devices.append(
                            {
                                "host_id": ids[name], "uuid": f"GPU-{name}-{g}", "index": g,
                                "model": "NVIDIA H100 80GB HBM3", "architecture": "hopper", "memory_mib": 81559,
                                "health": "healthy", "admin_state": "active", "mig_mode": "disabled",
                                "pci_bus_id": f"00000000:{g + 16:02X}:00.0", "slices": [], "details": {},
                                "updated_at": now,
                            }
                        )  # fmt: skip
                    issued = issue(AGENT_CREDENTIAL_PREFIX)
                    credentials.append(
                        {"key_id": issued.key_id, "secret_sha256": issued.secret_sha256, "host_id": ids[name],
                         "created_at": now}
                    )  # fmt: skip
                    creds[name] = issued.token
                conn.execute(insert(Device), devices)
                conn.execute(insert(AgentCredential), credentials)
        # Inserting 100,000 hosts takes minutes: they all "reported" now, as a running fleet would have.
        with db.engine.begin() as conn:
            conn.execute(update(Host).values(last_seen=datetime.now(UTC)))
    finally:
        db.dispose()
    return creds


def _pg_xacts(database_url: str) -> int | None:
    """Committed + rolled-back transactions of the bench database (pg_stat_database), None on SQLite."""
    if not database_url.startswith("postgresql"):
        return None
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            value = conn.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
    finally:
        engine.dispose()
    return int(value or 0)


def _unreachable(database_url: str, since: datetime) -> tuple[int, int]:
    """Hosts unreachable now, and hosts the sweeper marked unreachable since ``since`` (its audit rows)."""
    from sqlalchemy import func, select

    from controller.store.db import Database
    from controller.store.models import AuditEntry, Host

    db = Database(database_url, pool_size=1)
    try:
        with db.session() as session:
            now = session.scalar(select(func.count()).select_from(Host).where(Host.status == "unreachable")) or 0
            marked = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "host.unreachable", AuditEntry.at >= since)
            )
            return int(now), int(marked or 0)
    finally:
        db.dispose()


# ---- setup: register hosts through the API ------------------------------------------------------


async def _register_all(url: str, bootstrap: str, names: list[str], docs: dict[str, bytes]) -> dict[str, str]:
    import aiohttp

    creds: dict[str, str] = {}
    sem = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, name: str) -> None:
        async with sem:
            body = {"hostname": name, "agent_version": "bench"}
            async with session.post(
                f"{url}/v1/agents/register", json=body, headers={"Authorization": f"Bearer {bootstrap}"}
            ) as r:
                assert r.status == 201, await r.text()
                creds[name] = (await r.json())["credential"]
            async with session.put(
                f"{url}/v1/agents/{name}/inventory",
                data=docs[name],
                headers={"Authorization": f"Bearer {creds[name]}", "Content-Type": "application/json"},
            ) as r:
                assert r.status == 200, await r.text()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, n) for n in names))
    return creds


# ---- load generator process ---------------------------------------------------------------------


@dataclass
class Share:
    url: str
    hosts: list[tuple[str, str]]  # (hostname, credential)
    concurrency: int
    duration: float
    rate: float  # 0: closed loop
    mix: tuple[float, float]  # cumulative thresholds: heartbeat, report_unchanged
    seed: int
    warm_up: bool = True


def _load_process(share: Share, out: Any, warmed: Any, go: Any) -> None:
    out.put(asyncio.run(_load(share, warmed, go)))


async def _load(share: Share, warmed: Any, go: Any) -> dict[str, Any]:
    """Each in-flight slot is one keep-alive connection with its own share of the hosts, as an agent keeps its
    connection to the controller between reports (keep-alive 75 s > the 30 s interval): a host's requests
    reach the same worker process, whose caches (auth, replies) then hold it. Unless ``--cold``, every slot
    first sends one untimed heartbeat per host of its share (the fleet's steady state: each agent's first
    request after a controller start looks its credential up once)."""
    import aiohttp

    rnd = random.Random(share.seed)
    templates = {v: json.dumps(inventory_doc(HOST_MARK, v)) for v in (0, 1)}
    state = {name: {"gen": 1, "variant": 0} for name, _ in share.hosts}
    hashes = {
        (name, v): dict_hash(json.loads(templates[v].replace(HOST_MARK, name)))
        for name, _ in share.hosts
        for v in (0, 1)
    }
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: dict[str, int] = {}
    order = list(share.hosts)
    rnd.shuffle(order)
    slots = [order[i :: share.concurrency] for i in range(share.concurrency)]
    warm_errors = 0

    def body_for(name: str, kind: str) -> tuple[str, str, bytes]:
        st = state[name]
        if kind == "heartbeat":
            doc = {"generation": st["gen"], "inventory_hash": hashes[(name, st["variant"])]}
            return "POST", f"/v1/agents/{name}/heartbeat", json.dumps(doc).encode()
        if kind == "report_changed":
            st["variant"] ^= 1
        st["gen"] += 1
        inv = templates[st["variant"]].replace(HOST_MARK, name)
        return "PUT", f"/v1/agents/{name}/inventory", f'{{"generation":{st["gen"]},"inventory":{inv}}}'.encode()

    timeout = aiohttp.ClientTimeout(total=60)
    interval = share.concurrency / share.rate if share.rate else 0.0

    async def send(session: aiohttp.ClientSession, name: str, cred: str, kind: str) -> int | str:
        method, path, data = body_for(name, kind)
        headers = {"Authorization": f"Bearer {cred}", "Content-Type": "application/json"}
        try:
            async with session.request(method, share.url + path, data=data, headers=headers) as r:
                await r.read()
                return r.status
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    async def warm(session: aiohttp.ClientSession, hosts: list[tuple[str, str]]) -> None:
        nonlocal warm_errors
        for name, cred in hosts:
            warm_errors += await send(session, name, cred, "heartbeat") != 200

    async def keep_alive(session: aiohttp.ClientSession) -> None:
        # Until the measured run starts, keep this slot's connection (and so its worker) from idling out.
        while not go.is_set():
            async with session.get(share.url + "/healthz") as r:
                await r.read()
            await asyncio.sleep(1)

    async def worker(session: aiohttp.ClientSession, idx: int, started: float, stop_at: float) -> None:
        hosts = slots[idx]
        if not hosts:
            return
        next_at = started + (interval * idx / share.concurrency if interval else 0.0)
        turn = 0
        while True:
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            t_sched = next_at if interval else time.perf_counter()
            if t_sched >= stop_at:
                return
            name, cred = hosts[turn % len(hosts)]
            turn += 1
            p = rnd.random()
            kind = "heartbeat" if p < share.mix[0] else "report_unchanged" if p < share.mix[1] else "report_changed"
            status = await send(session, name, cred, kind)
            done = time.perf_counter()
            if done <= stop_at + 5:
                lat[kind].append(done - t_sched)
            if status != 200:
                errors[f"{kind}:{status}"] = errors.get(f"{kind}:{status}", 0) + 1
            if interval:
                next_at += interval

    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=False, keepalive_timeout=60), timeout=timeout
        )
        for _ in range(share.concurrency)
    ]
    try:
        pending = [len(sessions)]

        async def slot_ready(i: int, s: aiohttp.ClientSession) -> None:
            if share.warm_up:
                await warm(s, slots[i])
            pending[0] -= 1
            if pending[0] == 0:
                warmed.put(True)  # the parent snapshots CPU and database counters, then says go
            await keep_alive(s)

        await asyncio.gather(*(slot_ready(i, s) for i, s in enumerate(sessions)))
        started = time.perf_counter()
        stop_at = started + share.duration
        await asyncio.gather(*(worker(s, i, started, stop_at) for i, s in enumerate(sessions)))
    finally:
        for s in sessions:
            await s.close()
    return {
        "latencies": lat,
        "errors": errors,
        "elapsed": time.perf_counter() - started,
        "warm_up_errors": warm_errors,
    }


# ---- one run ------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of the controller process and its worker processes (Linux /proc)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            out += [int(c) for c in children.read_text().split()]
    return out + [g for c in out for g in _children(c)]


def _pct(xs: list[float], p: float) -> float:
    return round(1000 * xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else 0.0


def run_once(database_url: str, label: str, args: argparse.Namespace, env_extra: dict[str, str]) -> dict[str, Any]:
    from controller.testing import free_port

    bootstrap = prepare_database(database_url, env_extra)
    names = [f"bench-{i:06d}" for i in range(args.hosts)]
    t0 = time.perf_counter()
    if args.bulk_register:
        creds = bulk_register(database_url, names)
    ctl = start_controller(database_url, free_port(), env_extra, bootstrap, args.workers)
    try:
        if not args.bulk_register:
            template = json.dumps(inventory_doc(HOST_MARK, 0))
            docs = {n: f'{{"generation":1,"inventory":{template.replace(HOST_MARK, n)}}}'.encode() for n in names}
            creds = asyncio.run(_register_all(ctl.url, ctl.bootstrap, names, docs))
        setup_s = time.perf_counter() - t0
        hb = args.heartbeat_pct / 100
        mix = (hb, hb + args.unchanged_report_pct / 100)
        per_proc = max(1, args.concurrency // args.procs)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        warmed = ctx.Queue()
        go = ctx.Event()
        hosts = [(n, creds[n]) for n in names]
        procs = [
            ctx.Process(
                target=_load_process,
                args=(
                    Share(
                        url=ctl.url,
                        hosts=hosts[i :: args.procs],
                        concurrency=per_proc,
                        duration=args.duration,
                        rate=args.rate / args.procs if args.rate else 0.0,
                        mix=mix,
                        seed=i,
                        warm_up=not args.cold,
                    ),
                    out,
                    warmed,
                    go,
                ),
            )
            for i in range(args.procs)
        ]
        profiler = None
        if args.profile:
            profiler = subprocess.Popen(
                [
                    shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy",
                    "record",
                    "--pid",
                    str(ctl.proc.pid),
                    "--subprocesses",
                    "--duration",
                    str(int(args.duration)),
                    "--format",
                    "raw",
                    "--output",
                    f"{args.profile}-{label}.txt",
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for p in procs:
            p.start()
        for _ in procs:
            warmed.get()
        load_before = [round(x, 2) for x in os.getloadavg()]
        cpu0 = _cpu_seconds(ctl.proc.pid)
        xacts0 = _pg_xacts(database_url)
        measured_from = datetime.now(UTC)
        go.set()
        parts = [out.get() for _ in procs]
        cpu_s = _cpu_seconds(ctl.proc.pid) - cpu0
        xacts1 = _pg_xacts(database_url)
        load_after = [round(x, 2) for x in os.getloadavg()]
        for p in procs:
            p.join()
        if profiler is not None:
            profiler.wait(timeout=60)
        unreachable, marked_unreachable = _unreachable(database_url, measured_from)
    finally:
        ctl.stop()
    lat: dict[str, list[float]] = {k: sorted(x for part in parts for x in part["latencies"][k]) for k in KINDS}
    errors: dict[str, int] = {}
    for part in parts:
        for k, v in part["errors"].items():
            errors[k] = errors.get(k, 0) + v
    elapsed = max(part["elapsed"] for part in parts)
    every = sorted(x for k in KINDS for x in lat[k])
    cpu_ms_heartbeat, cpu_ms_changed = _cpu_split(cpu_s, lat, args)
    return {
        # the keys of --json (issue 12), then the detail
        "hosts": args.hosts,
        "duration_s": round(elapsed, 1),
        "db": label,
        "workers": args.workers,
        "reports_per_s": round(len(every) / elapsed, 1),
        "p50_ms": _pct(every, 0.5),
        "p99_ms": _pct(every, 0.99),
        "server_cpu_ms_per_heartbeat": cpu_ms_heartbeat,
        "server_cpu_ms_per_changed_report": cpu_ms_changed,
        "errors": sum(errors.values()),
        "load_avg": load_after,
        "db_xacts_per_s": round((xacts1 - xacts0) / elapsed, 1) if xacts0 is not None and xacts1 is not None else None,
        "hosts_unreachable_at_end": unreachable,
        "hosts_marked_unreachable_during_run": marked_unreachable,
        "database": label,
        "server_cpu_s": round(cpu_s, 2),
        "server_cpu_ms_per_report": round(1000 * cpu_s / max(1, len(every)), 2),
        "reports_per_server_cpu_s": round(len(every) / cpu_s, 1) if cpu_s else None,
        "loadavg_before": load_before,
        "load_procs": args.procs,
        "concurrency": per_proc * args.procs,
        "offered_rate": args.rate or None,
        "setup_s": round(setup_s, 1),
        "warm_up": not args.cold,
        "warm_up_errors": sum(part["warm_up_errors"] for part in parts),
        "requests": len(every),
        "per_kind": {
            k: {"count": len(lat[k]), "p50_ms": _pct(lat[k], 0.5), "p99_ms": _pct(lat[k], 0.99)} for k in KINDS
        },
        "errors_by_kind": errors,
    }


def _cpu_split(
    cpu_s: float, lat: dict[str, list[float]], args: argparse.Namespace
) -> tuple[float | None, float | None]:
    """Server CPU per unchanged heartbeat and per changed report. A mixed run gives only the average; the split
    comes from a heartbeat-only run (``--heartbeat-pct 100``: all CPU is heartbeats) and a mixed one: the changed
    reports' share is what the mix adds over heartbeats alone (see bench/results/ingest.md)."""
    count = sum(len(v) for v in lat.values())
    if not count or not cpu_s:
        return None, None
    if args.heartbeat_pct >= 100:
        return round(1000 * cpu_s / count, 3), None
    if args.heartbeat_cpu_ms is None:
        return None, None
    hb_ms = args.heartbeat_cpu_ms
    other = len(lat["report_unchanged"]) + len(lat["report_changed"])
    rest_ms = 1000 * cpu_s - hb_ms * len(lat["heartbeat"])
    return hb_ms, round(rest_ms / other, 3) if other else None


def _machine() -> dict[str, Any]:
    import sqlalchemy

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlalchemy": sqlalchemy.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgres"], help="repeatable; default both")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--concurrency", type=int, default=64, help="in-flight requests in total")
    parser.add_argument("--rate", type=float, default=0.0, help="offered requests/s (open loop); 0 = closed loop")
    parser.add_argument("--heartbeat-pct", type=float, default=94.0)
    parser.add_argument("--unchanged-report-pct", type=float, default=4.0)
    parser.add_argument("--profile", help="py-spy the controller; raw stacks to PREFIX-<db>.txt")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results/ingest.*")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the controller process")
    parser.add_argument(
        "--cold", action="store_true", help="measure without the warm-up heartbeat per host (every first request)"
    )
    parser.add_argument("--workers", type=int, default=1, help="`gpufabric controller serve --workers N`")
    parser.add_argument(
        "--bulk-register", action="store_true", help="register the hosts through the store (100,000-host fleets)"
    )
    parser.add_argument(
        "--heartbeat-cpu-ms",
        type=float,
        help="server CPU per heartbeat measured by a --heartbeat-pct 100 run; splits a mixed run's CPU",
    )
    parser.add_argument("--json", dest="json_path", help="also write the results (a list of objects) to this file")
    args = parser.parse_args()
    env_extra = dict(e.split("=", 1) for e in args.env)
    results = []
    for label in args.db or ["sqlite", "postgres"]:
        if label == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results.append(run_once(f"sqlite:///{tmp}/bench.db", "sqlite", args, env_extra))
        else:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
            try:
                results.append(run_once(url.render_as_string(hide_password=False), "postgresql", args, env_extra))
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        print(json.dumps(results[-1]), flush=True)
    lines = [
        f"| {r['database']} | {r['hosts']} | {r['workers']} | {r['load_procs']}x{r['concurrency']} | "
        f"{r['offered_rate'] or 'closed'} | {r['reports_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
        f"{r['server_cpu_ms_per_report']} | {r['server_cpu_ms_per_heartbeat']} | "
        f"{r['server_cpu_ms_per_changed_report']} | {r['db_xacts_per_s']} | {r['errors']} | "
        f"{r['hosts_unreachable_at_end']} | {r['load_avg'][0]} |"
        for r in results
    ]
    print("\n".join(lines))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
    if not args.no_record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        command = "python -m bench.ingest " + " ".join(sys.argv[1:])
        (RESULTS / "ingest.json").write_text(
            json.dumps({"command": command, "machine": _machine(), "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
