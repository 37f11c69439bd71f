"""Ingest benchmark: many synthetic agents reporting inventories and heartbeats to one controller.

    python -m bench.ingest --hosts 2000 --duration 20 --clients 32 [--postgres URL]

Each simulated agent registers, reports a full inventory (8 GPUs), then sends a heartbeat per
cycle with 1 in 10 cycles a changed inventory (a full write). The controller runs in this process
(uvicorn in a thread, as in production: one worker); clients are threads with keep-alive
connections. Prints and records sustained requests/s and p50/p99 latency per database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.api.app import create_app
from controller.auth.tokens import Role, create_api_token
from controller.observability.logs import configure_logging
from controller.settings import Settings
from controller.store.db import Database
from controller.store.schema import upgrade
from controller.testing import ServerThread
from drivers.contract.inventory import Gpu, HostIdentity, Inventory, MigState, PciInfo
from drivers.contract.protocol import Heartbeat, InventoryReport, RegisterRequest, inventory_content_hash

RESULTS = Path(__file__).resolve().parent.parent / "results"


def inventory(hostname: str, variant: int) -> Inventory:
    return Inventory(
        host=HostIdentity(hostname=hostname, agent_version=f"bench-{variant}", simulated=True),
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
            )
            for i in range(8)
        ],
    )


def run_once(database_url: str, label: str, hosts: int, duration: float, clients: int) -> dict[str, Any]:
    db = Database(database_url, pool_size=clients)
    upgrade(db.engine)
    settings = Settings(database_url=database_url, scheduler_enabled=False, log_level="WARNING", db_pool_size=clients)
    with db.session() as session:
        _, boot = create_api_token(session, role=Role.bootstrap, name="bench")
    server = ServerThread(create_app(settings, db=db)).start()
    names = [f"bench-{i:06d}" for i in range(hosts)]
    creds: dict[str, str] = {}
    gens: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for name in names:
            r = c.post(
                "/v1/agents/register",
                json=RegisterRequest(hostname=name, agent_version="b").model_dump(mode="json"),
                headers={"Authorization": f"Bearer {boot}"},
            )
            creds[name] = r.json()["credential"]
            body = InventoryReport(generation=1, inventory=inventory(name, 0)).model_dump(mode="json")
            c.put(f"/v1/agents/{name}/inventory", json=body, headers={"Authorization": f"Bearer {creds[name]}"})
            gens[name] = 1
    hb_hash = {n: inventory_content_hash(inventory(n, 0)) for n in names}
    latencies: dict[str, list[float]] = {"heartbeat": [], "inventory": []}
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def worker(idx: int) -> None:
        mine = names[idx::clients]
        local: dict[str, list[float]] = {"heartbeat": [], "inventory": []}
        cycle = 0
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while time.monotonic() < stop:
                for name in mine:
                    if time.monotonic() >= stop:
                        break
                    auth = {"Authorization": f"Bearer {creds[name]}"}
                    t0 = time.perf_counter()
                    if (cycle + hash(name)) % 10 == 0:
                        gens[name] += 1
                        body = InventoryReport(generation=gens[name], inventory=inventory(name, gens[name])).model_dump(
                            mode="json"
                        )
                        r = c.put(f"/v1/agents/{name}/inventory", json=body, headers=auth)
                        kind = "inventory"
                    else:
                        body = Heartbeat(generation=gens[name]).model_dump(mode="json")
                        r = c.post(f"/v1/agents/{name}/heartbeat", json=body, headers=auth)
                        kind = "heartbeat"
                    local[kind].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        with lock:
                            errors[0] += 1
                cycle += 1
        with lock:
            for k, v in local.items():
                latencies[k].extend(v)

    del hb_hash
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    server.stop()
    db.dispose()
    every = sorted(latencies["heartbeat"] + latencies["inventory"])

    def pct(xs: list[float], p: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else 0.0

    return {
        "database": label,
        "hosts": hosts,
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "requests": len(every),
        "reports_per_s": round(len(every) / elapsed, 1),
        "p50_ms": pct(every, 0.5),
        "p99_ms": pct(every, 0.99),
        "inventory_writes": len(latencies["inventory"]),
        "inventory_p99_ms": pct(sorted(latencies["inventory"]), 0.99),
        "heartbeat_p50_ms": round(1000 * statistics.median(latencies["heartbeat"]), 2) if latencies["heartbeat"] else 0,
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--postgres", help="PostgreSQL URL (a fresh schema is created and dropped)")
    args = parser.parse_args()
    configure_logging("WARNING")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run_once(f"sqlite:///{tmp}/bench.db", "sqlite", args.hosts, args.duration, args.clients))
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            results.append(
                run_once(
                    url.render_as_string(hide_password=False), "postgresql", args.hosts, args.duration, args.clients
                )
            )
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(
        json.dumps(
            {
                "command": "python -m bench.ingest "
                + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
                "results": results,
            },
            indent=2,
        )
    )
    lines = [
        f"| ingest | {r['database']} | {r['hosts']} hosts, {r['clients']} clients | {r['reports_per_s']} reports/s | "
        f"p50 {r['p50_ms']} ms | p99 {r['p99_ms']} ms | errors {r['errors']} |"
        for r in results
    ]
    (RESULTS / "ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
