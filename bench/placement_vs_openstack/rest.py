"""gpufabric's side over its REST API: a real controller process holding the same fleet as Placement.

For each fleet size and database (``--db sqlite`` by default; ``--db postgres`` uses a fresh schema of
``--postgres``), this module

1. migrates an empty database and mints a tenant token with the CLI (``gpufabric controller db upgrade``,
   ``gpufabric admin token create --role tenant``), like ``bench/ingest``; the tenant has no quota rows, so
   nothing limits it;
2. loads the fleet in bulk through the store: per host, the ``hosts`` and ``devices`` rows an agent's first
   inventory report leaves behind (``controller.fleet.ingest.store_inventory`` on the same ``Inventory`` an agent
   would send, status ``ready``), inserted with SQLAlchemy Core (``INSERT ... RETURNING``), not thousands of
   HTTP registrations; for the vGPU question the hosts belong to a ``nova`` backend (Nova computes running the
   agent: only a hypervisor backend declares the vgpu capability), which nothing in the bench contacts;
3. starts ``gpufabric controller serve`` (its placement index is built from the store at start-up) and times
   ``POST /v1/placements:dry-run`` for the bench's vGPU question: sequential requests on one keep-alive httpx
   client;
4. stops it, gives the same hosts' GPUs to tenants whole instead of as vGPUs (static backend: a vGPU lease needs
   a hypervisor backend, Nova, to become ``ready``), starts it again and times lease create + release pairs
   (``POST /v1/leases`` for one whole A100, then ``DELETE /v1/leases/{id}``), sequential and with ``--clients``
   threads, each on its own keep-alive client.

With ``--profile`` each phase runs once more, untimed, under py-spy (``--nonblocking``), and the samples are
summarised by layer (``profile_breakdown``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from bench.placement_vs_openstack.fleets import GPUFABRIC_REQUEST, GPUS_PER_HOST, VGPU_TYPE, VGPUS_PER_GPU

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TENANT = "bench"
# The vGPU question of the Placement comparison, and the lease the static backend can make ready at once.
DRY_RUN_REQUEST = GPUFABRIC_REQUEST
LEASE_REQUEST = {"slices": [{"kind": "gpu", "model": "A100"}]}
GPU_NAME = "NVIDIA A100-SXM4-80GB"  # short model A100-80GB, as in the in-process fleet
VGPU_NAME = f"NVIDIA {VGPU_TYPE}"  # the controller strips "NVIDIA ": the engine sees A100-10C
LABELS = {"region": "region-1", "az": "az-1"}  # the in-process fleet's region and AZ

FleetMode = Literal["vgpu", "gpu"]
PROFILE_HZ = 200


# ---- the fleet, as an agent's reports leave it in the store ------------------------------------------------

NOVA_BACKEND = "bench-nova"
NOVA_CONFIG: dict[str, Any] = {
    "auth": {"method": "admin_token", "token": "bench", "endpoints": {"placement": "http://127.0.0.1:9"}},
    "controller_url": "http://127.0.0.1:9",
    "image": "bench-image",
    "reconcile_interval_s": 86400,
}


def hostname(i: int) -> str:
    return f"bench-host-{i:06d}"


def agent_inventory(i: int, mode: FleetMode) -> Any:
    """Host ``i``'s inventory as its agent reports it: 2 A100 80GB, MIG off, offering vGPUs or not."""
    from drivers.contract.inventory import Gpu, HostIdentity, Inventory, MigState, PciInfo, VgpuInfo, VgpuType

    vgpu = (
        VgpuInfo(
            supported=[
                VgpuType(id=1, name=VGPU_NAME, type_class="Compute", framebuffer_mib=10240, max_instances=VGPUS_PER_GPU)
            ]
        )
        if mode == "vgpu"
        else None
    )
    return Inventory(
        host=HostIdentity(hostname=hostname(i), agent_version="bench", simulated=True),
        driver_version="570.00",
        cuda_driver_version="12.8",
        gpus=[
            Gpu(
                index=g,
                uuid=f"GPU-{i:06d}-{g}",
                name=GPU_NAME,
                pci=PciInfo(bus_id=f"00000000:{g + 16:02X}:00.0", device_id="0x20B210DE"),
                architecture="ampere",
                compute_capability="8.0",
                memory_total_mib=81920,
                mig=MigState(capable=True, current=False, state="disabled"),
                vgpu=vgpu,
            )
            for g in range(GPUS_PER_HOST)
        ],
    )


def fleet_rows(hosts: int, mode: FleetMode, now: datetime) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(host row, device rows) per host: ``store_inventory``'s columns on a fresh host, plus what the
    registration (labels, agent version) and the report route (``status=ready``, ``last_seen``) set."""
    from controller.fleet.ingest import store_inventory
    from controller.store.models import Device
    from controller.store.models import Host as HostRow
    from drivers.contract.protocol import inventory_content_hash

    host_cols = {c.key for c in HostRow.__table__.columns} - {"id"}
    device_cols = {c.key for c in Device.__table__.columns} - {"id", "host_id"}
    for i in range(hosts):
        inv = agent_inventory(i, mode)
        row = HostRow(hostname=hostname(i), labels=dict(LABELS))
        store_inventory(row, inv, inventory_content_hash(inv), 1, now)
        host = {k: v for k, v in vars(row).items() if k in host_cols}
        host.update(status="ready", last_seen=now, registered_at=now, admin_state="active", placement_version=0)
        devices = [{k: v for k, v in vars(d).items() if k in device_cols} for d in row.devices]
        yield host, devices


def load_store_fleet(database_url: str, hosts: int, mode: FleetMode) -> dict[str, Any]:
    """Replace every host of the (migrated) database with ``hosts`` bench hosts; returns counts and seconds."""
    from sqlalchemy import delete, insert

    from controller.store.db import Database
    from controller.store.models import Backend, Device, MigInstance
    from controller.store.models import Host as HostRow

    t0 = time.perf_counter()
    now = datetime.now(UTC)
    host_rows: list[dict[str, Any]] = []
    device_rows: list[list[dict[str, Any]]] = []
    for h, ds in fleet_rows(hosts, mode, now):
        host_rows.append(h)
        device_rows.append(ds)
    build_s = time.perf_counter() - t0
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(delete(MigInstance))
            conn.execute(delete(Device))
            conn.execute(delete(HostRow))
            conn.execute(delete(Backend).where(Backend.name == NOVA_BACKEND))
            if mode == "vgpu":
                # vGPUs are handed out by a hypervisor backend (the static backend declares no vgpu capability):
                # the hosts are Nova computes running the agent. Nothing here contacts Nova (port 9 is discard).
                backend_id = conn.execute(
                    insert(Backend).returning(Backend.id),
                    [{"name": NOVA_BACKEND, "kind": "nova", "config": NOVA_CONFIG, "created_at": now}],
                ).scalar_one()
                for h in host_rows:
                    h["backend_id"] = backend_id
            ids = (
                conn.execute(insert(HostRow).returning(HostRow.id, sort_by_parameter_order=True), host_rows)
                .scalars()
                .all()
            )
            rows = [{**d, "host_id": hid} for hid, ds in zip(ids, device_rows, strict=True) for d in ds]
            conn.execute(insert(Device), rows)
    finally:
        db.dispose()
    return {
        "hosts": len(host_rows),
        "devices": len(rows),
        "mode": mode,
        "build_s": round(build_s, 2),
        "load_s": round(time.perf_counter() - t0, 2),
    }


# ---- the controller process --------------------------------------------------------------------------------


def _exe() -> str:
    return shutil.which("gpufabric", path=str(Path(sys.executable).parent)) or "gpufabric"


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([_exe(), *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"gpufabric {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout


def controller_env(database_url: str, log_level: str) -> dict[str, str]:
    return {
        **os.environ,
        "GPUFABRIC_DATABASE_URL": database_url,
        "GPUFABRIC_LOG_LEVEL": log_level,
        # No agent heartbeats here: keep the sweeper from marking the bench hosts unreachable mid-run.
        "GPUFABRIC_HEARTBEAT_TIMEOUT_S": "86400",
    }


def prepare_database(env: dict[str, str]) -> str:
    """Migrate and mint the tenant token; returns its secret."""
    _cli(env, "controller", "db", "upgrade")
    out = _cli(env, "admin", "token", "create", "--role", "tenant", "--tenant", TENANT, "--name", "bench", "--json")
    return str(json.loads(out)["token"])


@dataclass
class Controller:
    url: str
    proc: subprocess.Popen[bytes]
    start_s: float  # spawn to /healthz answering: imports, index build from the store, uvicorn up

    def cpu_s(self) -> float:
        """user + system CPU seconds of the controller process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def controller(env: dict[str, str], log_path: Path) -> Iterator[Controller]:
    from controller.testing import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [_exe(), "controller", "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"controller did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield Controller(url=url, proc=proc, start_s=round(time.perf_counter() - t0, 2))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def database(kind: str, postgres_url: str, workdir: Path, size: int) -> Iterator[tuple[str, str]]:
    """(label, URL) of an empty database: a sqlite file, or a fresh PostgreSQL schema (dropped afterwards)."""
    if kind == "sqlite":
        path = workdir / f"gpufabric-{size}-{uuid.uuid4().hex[:6]}.db"
        yield "sqlite", f"sqlite:///{path}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield "postgresql", url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# ---- measurements ------------------------------------------------------------------------------------------


def _pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))] if sorted_ms else 0.0


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s), 3),
        "p99_ms": round(_pct(s, 0.99), 3),
        "max_ms": round(s[-1], 3),
        "mean_ms": round(statistics.fmean(s), 3),
    }


def _lease_counters(client: httpx.Client) -> dict[str, float]:
    """This replica's lease counters from /metrics (created, refused, conflicts retried, released)."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("gpufabric_lease") and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def time_dry_runs(ctl: Controller, token: str, requests: int, warmup: int, expect_hosts: int) -> dict[str, Any]:
    """Sequential ``POST /v1/placements:dry-run`` on one keep-alive client; every answer must place the vGPU."""
    body = json.dumps(DRY_RUN_REQUEST).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    times: list[float] = []
    with httpx.Client(base_url=ctl.url, headers=headers, timeout=120) as client:
        first = client.post("/v1/placements:dry-run", content=body)
        if first.status_code != 200:
            raise AssertionError(f"dry-run answered {first.status_code}: {first.text[:2000]}")
        doc = first.json()
        node = doc["nodes"][0]
        alloc = node["allocations"][0]
        if not doc.get("fits") or alloc.get("kind") != "vgpu" or doc["candidates"]["hosts"] != expect_hosts:
            raise AssertionError(f"unexpected dry-run answer for a {expect_hosts}-host fleet: {doc}")
        for _ in range(warmup):
            client.post("/v1/placements:dry-run", content=body).raise_for_status()
        cpu0 = ctl.cpu_s()
        t_all = time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            r = client.post("/v1/placements:dry-run", content=body)
            r.read()
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise AssertionError(f"dry-run answered {r.status_code}: {r.text[:2000]}")
        wall = time.perf_counter() - t_all
        cpu = ctl.cpu_s() - cpu0
    return {
        "request": DRY_RUN_REQUEST,
        "requests": requests,
        **_summary(times),
        "requests_per_s": round(requests / wall, 1),
        "server_cpu_ms_per_request": round(1000 * cpu / requests, 3),
        "answer": {
            # A tenant's answer names the backend, not the host (refusals and dry runs hide the fleet's names).
            "host": node.get("host") or node.get("backend"),
            "allocation": {k: alloc.get(k) for k in ("kind", "model", "vgpu_type", "units")},
            "candidates": doc["candidates"],
            "response_bytes": len(first.content),
        },
    }


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _pairs(url: str, token: str, n: int, out: dict[str, Any], start: threading.Barrier | None) -> None:
    body = json.dumps(LEASE_REQUEST).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    create: list[float] = []
    release: list[float] = []
    pair: list[float] = []
    errors: dict[str, int] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        client.get("/healthz")  # open the connection outside the timings
        if start is not None:
            start.wait()
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.post("/v1/leases", content=body)
            t1 = time.perf_counter()
            doc = _json(r)
            if r.status_code != 201 or doc.get("state") != "ready":
                key = f"create:{r.status_code}:{str(doc.get('type') or doc.get('state') or '').rsplit('/', 1)[-1]}"
                errors[key] = errors.get(key, 0) + 1
                continue
            r = client.delete(f"/v1/leases/{doc['id']}")
            t2 = time.perf_counter()
            if r.status_code != 200 or _json(r).get("state") != "released":
                key = f"release:{r.status_code}"
                errors[key] = errors.get(key, 0) + 1
                continue
            create.append((t1 - t0) * 1000)
            release.append((t2 - t1) * 1000)
            pair.append((t2 - t0) * 1000)
    out.update(create=create, release=release, pair=pair, errors=errors, done=time.perf_counter())


def time_floor(ctl: Controller, token: str, requests: int) -> dict[str, Any]:
    """What any request costs before a lease does anything: ``GET /healthz`` (HTTP, middleware, no auth, no
    store) and ``GET /v1/leases/{id}`` of one released lease (the same plus the tenant's token and one read of
    the lease with its transitions). Sequential on one keep-alive client; server CPU per request, as above."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    out: dict[str, Any] = {"requests": requests}
    with httpx.Client(base_url=ctl.url, headers=headers, timeout=120) as client:
        made = client.post("/v1/leases", content=json.dumps(LEASE_REQUEST).encode())
        if made.status_code != 201:
            raise AssertionError(f"lease for the floor answered {made.status_code}: {made.text[:2000]}")
        lease_id = made.json()["id"]
        client.delete(f"/v1/leases/{lease_id}").raise_for_status()
        for name, path in (("healthz", "/healthz"), ("authenticated_read", f"/v1/leases/{lease_id}")):
            for _ in range(20):
                client.get(path).raise_for_status()
            times: list[float] = []
            cpu0 = ctl.cpu_s()
            for _ in range(requests):
                t = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise AssertionError(f"GET {path} answered {r.status_code}: {r.text[:2000]}")
            cpu = ctl.cpu_s() - cpu0
            out[name] = {"path": path, **_summary(times), "server_cpu_ms_per_request": round(1000 * cpu / requests, 3)}
    return out


def time_lease_pairs(ctl: Controller, token: str, pairs: int, clients: int) -> dict[str, Any]:
    """``pairs`` create + release pairs in all, over ``clients`` threads (1: sequential)."""
    per = max(1, pairs // clients)
    parts: list[dict[str, Any]] = [{} for _ in range(clients)]
    with httpx.Client(base_url=ctl.url, timeout=30) as probe:
        before = _lease_counters(probe)
    cpu0 = ctl.cpu_s()
    if clients == 1:
        t0 = time.perf_counter()
        _pairs(ctl.url, token, per, parts[0], None)
    else:
        barrier = threading.Barrier(clients + 1)
        threads = [
            threading.Thread(target=_pairs, args=(ctl.url, token, per, parts[i], barrier), daemon=True)
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
    wall = max(p["done"] for p in parts) - t0
    cpu = ctl.cpu_s() - cpu0
    with httpx.Client(base_url=ctl.url, timeout=30) as probe:
        after = _lease_counters(probe)
    ok = sum(len(p["pair"]) for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if ok == 0:
        raise AssertionError(f"no lease pair succeeded: {errors}")
    delta = {k.removeprefix("gpufabric_").removesuffix("_total"): after[k] - before.get(k, 0) for k in after}
    return {
        "clients": clients,
        "pairs": ok,
        "pairs_per_s": round(ok / wall, 1),
        "pair": _summary([x for p in parts for x in p["pair"]]),
        "create": _summary([x for p in parts for x in p["create"]]),
        "release": _summary([x for p in parts for x in p["release"]]),
        "server_cpu_ms_per_pair": round(1000 * cpu / ok, 3),
        "errors": errors,
        "counters": {k: int(v) for k, v in delta.items()},
    }


@contextmanager
def _profiled(ctl: Controller, prefix: str | None, key: str, name: str, out: dict[str, Any]) -> Iterator[None]:
    """py-spy the controller while the block runs (raw collapsed stacks to ``PREFIX-NAME.txt``); needs py-spy on
    PATH or in ``$PY_SPY``. Not part of the project's dependencies: install it anywhere."""
    exe = (os.environ.get("PY_SPY") or shutil.which("py-spy")) if prefix else None
    if prefix and exe is None:
        print("  (py-spy not found: set PY_SPY=/path/to/py-spy; no profile)", flush=True)
    if not prefix or exe is None:
        yield
        return
    path = f"{prefix}-{name}.txt"
    cmd = [exe, "record", "--pid", str(ctl.proc.pid), "--rate", str(PROFILE_HZ), "--nonblocking", "--format", "raw"]
    cmd += ["--output", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached before the timed block
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"  profile: {path}", flush=True)
    if Path(path).is_file():
        out[key] = profile_breakdown(Path(path))


# Where a sampled stack's time goes: the innermost frame from one of these (first match wins) names its layer.
# Frames of the standard library (json, threading, re...) count for the layer that called them.
_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("placement engine", ("controller/placement/",)),
    ("database driver (SQL executed, commit)", ("do_execute", "do_executemany", "do_commit", "psycopg/", "sqlite3")),
    ("SQLAlchemy (ORM/Core, Python side)", ("sqlalchemy/",)),
    ("change feed / revision bookkeeping", ("controller/store/changes.py",)),
    ("lease service and routes (gpufabric code)", ("controller/leases/", "controller/api/routes/", "controller/audit")),
    ("auth (token check)", ("controller/auth/", "controller/api/deps.py")),
    ("FastAPI/Starlette/pydantic (routing, dependencies, validation, JSON)", ("fastapi/", "starlette/", "pydantic")),
    (
        "HTTP server and thread hand-off (uvicorn, asyncio; anyio runs each sync route on a worker thread)",
        ("uvicorn/", "httptools", "asyncio/", "anyio/"),
    ),
    ("gpufabric middleware, metrics, logging", ("controller/observability/", "prometheus_client/", "logging/")),
)
_BACKGROUND = ("apscheduler/", "controller/jobs/", "_poll_loop", "_flush_loop")
_IDLE_LEAVES = (
    "Condition.wait", "Event.wait", "Queue.get", "select (selectors", "_worker (concurrent/futures/thread.py",
    "Runner.run (asyncio/runners.py", "sleep", "poll (selectors",
)  # fmt: skip


def profile_breakdown(path: Path) -> dict[str, Any]:
    """Share of the controller's busy samples per layer (py-spy raw output: ``frame;frame;... count`` lines).

    Busy: every sample of a thread not waiting for work; a request thread waiting for the database (SQLite's
    write lock, a PostgreSQL round trip) counts, under the database driver. A sample whose innermost frame is the
    event loop itself (``Runner.run``: uvloop and httptools at work in C, or waiting for a socket) cannot be told
    apart from idling, so it counts as idle."""
    busy = idle = 0
    layers: dict[str, int] = {}
    functions: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(_IDLE_LEAVES):
            idle += n
            continue
        busy += n
        if any(b in f for f in frames for b in _BACKGROUND):
            layer = "background jobs (scheduler, change-feed poller, last-seen flush)"
        else:
            layer = next(
                (name for f in reversed(frames) for name, keys in _LAYERS if any(k in f for k in keys)), "other"
            )
        layers[layer] = layers.get(layer, 0) + n
        # gpufabric's own functions; its ASGI middlewares wrap every request, so they say nothing here.
        own = {f.rsplit(":", 1)[0] + ")" for f in frames if "controller/" in f and "controller/cli/" not in f}
        for f in own:
            if "Middleware.__call__" in f:
                continue
            functions[f] = functions.get(f, 0) + n

    def pct(counts: dict[str, int], top: int) -> dict[str, float]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return {k: round(100 * v / busy, 1) for k, v in ranked} if busy else {}

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "busy_pct_by_layer": pct(layers, len(layers)),
        "busy_pct_in_gpufabric_functions": pct(functions, 15),  # inclusive: a function and what it calls
        "raw": str(path),
    }


def rest_side(
    size: int,
    db_kind: str,
    postgres_url: str,
    workdir: Path,
    *,
    requests: int,
    warmup: int,
    pairs: int,
    clients: int,
    log_level: str = "WARNING",
    profile: str | None = None,
) -> dict[str, Any]:
    """Both phases (dry-run on the vGPU fleet, lease pairs on the whole-GPU fleet) for one size and database."""
    with database(db_kind, postgres_url, workdir, size) as (label, url):
        env = controller_env(url, log_level)
        token = prepare_database(env)
        log_path = workdir / f"controller-{size}-{label}.log"
        out: dict[str, Any] = {"database": label, "hosts": size, "log_level": log_level, "tenant_quotas": "none"}

        # py-spy (--profile) samples an extra, untimed pass of each phase: sampling slows a 2-core machine.
        profiles: dict[str, Any] = {}
        if profile:
            out["profile"] = profiles
        out["fleet_vgpu"] = load_store_fleet(url, size, "vgpu")
        with controller(env, log_path) as ctl:
            out["dry_run"] = time_dry_runs(ctl, token, requests, warmup, size)
            out["dry_run"]["controller_start_s"] = ctl.start_s
            if profile:
                with _profiled(ctl, profile, "dry_run", f"{size}-{label}-dry-run", profiles):
                    time_dry_runs(ctl, token, requests, 0, size)
        d = out["dry_run"]
        print(
            f"  REST       {size:>6} hosts  {label:<10} dry-run          p50 {d['p50_ms']:>8.3f} ms  "
            f"p99 {d['p99_ms']:>8.3f} ms  {d['requests_per_s']:>8,.0f} req/s",
            flush=True,
        )

        out["fleet_gpu"] = load_store_fleet(url, size, "gpu")
        with controller(env, log_path) as ctl:
            out["lease_start_s"] = ctl.start_s
            # A few pairs first: connections, caches, the first transition rows.
            time_lease_pairs(ctl, token, min(20, pairs), 1)
            out["lease_pairs"] = {
                "request": LEASE_REQUEST,
                "sequential": time_lease_pairs(ctl, token, pairs, 1),
                "concurrent": time_lease_pairs(ctl, token, pairs, clients) if clients > 1 else None,
            }
            out["floor"] = time_floor(ctl, token, requests)
            if profile:
                with _profiled(ctl, profile, "lease_pairs", f"{size}-{label}-leases", profiles):
                    time_lease_pairs(ctl, token, pairs, 1)
                    if clients > 1:
                        time_lease_pairs(ctl, token, pairs, clients)
        for mode, row in out["lease_pairs"].items():
            if mode == "request" or row is None:
                continue
            print(
                f"  REST       {size:>6} hosts  {label:<10} lease pairs x{row['clients']:<2}   "
                f"p50 {row['pair']['p50_ms']:>8.3f} ms  p99 {row['pair']['p99_ms']:>8.3f} ms  "
                f"{row['pairs_per_s']:>8,.1f} pairs/s",
                flush=True,
            )
        for name in ("healthz", "authenticated_read"):
            f = out["floor"][name]
            print(
                f"  REST       {size:>6} hosts  {label:<10} floor {name:<18} p50 {f['p50_ms']:>8.3f} ms  "
                f"server CPU {f['server_cpu_ms_per_request']:>6.3f} ms/req",
                flush=True,
            )
    return out
