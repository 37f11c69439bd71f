"""Two controller processes on one PostgreSQL, 16 concurrent clients creating and releasing 2,000 leases
against scarce capacity; then an invariant checker over the store: no unit was ever live twice, every lease
followed the state machine, and after everything is released there are no live claims and full capacity.

PostgreSQL only: skips without GPUFABRIC_TEST_POSTGRES_URL, fails with GPUFABRIC_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.auth.tokens import Role, create_api_token
from controller.leases.state import TRANSITIONS
from controller.store.db import Database
from controller.store.schema import upgrade
from controller.testing import free_port
from drivers.contract.inventory import (
    Gpu,
    HostIdentity,
    Inventory,
    MigInstance,
    MigState,
    PciInfo,
    Placement,
    SliceOffer,
)
from tests.support.controller import _postgres_url_or_skip
from tests.support.helpers import register, report

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOTAL_LEASES = 2000
CLIENTS = 16
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"

REQUESTS: list[dict[str, Any]] = [
    {"slices": [{"kind": "gpu", "count": 1, "model": "H100"}]},
    {"slices": [{"kind": "gpu", "count": 2}], "topology": "same-host"},
    {"slices": [{"kind": "gpu", "count": 4, "model": "H100"}], "policy": "spread"},
    {"slices": [{"kind": "gpu", "count": 8}]},
    {"slices": [{"kind": "gpu", "count": 4}], "nodes": 2, "topology": "same-az"},
    {"slices": [{"kind": "mig", "profile": "1g.10gb"}]},
    {"slices": [{"kind": "mig", "profile": "1g.10gb", "count": 3}]},
    {"slices": [{"kind": "timeslice", "count": 1}]},
    {"slices": [{"kind": "timeslice", "count": 3}]},
]


def _gpu(host: str, i: int, name: str, **extra: Any) -> Gpu:
    return Gpu(
        index=i,
        uuid=f"GPU-{host}-{i}",
        name=name,
        pci=PciInfo(bus_id=f"00000000:{i + 10:02X}:00.0", device_id="0x233010DE"),
        architecture="hopper" if name == H100 else "ampere",
        compute_capability="9.0",
        memory_total_mib=81559,
        **extra,
    )


def _inventory(host: str, gpus: list[Gpu]) -> Inventory:
    return Inventory(
        host=HostIdentity(hostname=host, agent_version="test", simulated=True),
        driver_version="570.00",
        cuda_driver_version="12.8",
        gpus=gpus,
    )


def scarce_fleet() -> list[Inventory]:
    fleet = [
        _inventory(
            f"h100-{n}", [_gpu(f"h100-{n}", i, H100, mig=MigState(capable=True, state="disabled")) for i in range(8)]
        )
        for n in range(4)
    ]
    mig_gpus = []
    for i in range(2):
        instances = [
            MigInstance(
                gpu_instance_id=7 + s,
                profile="1g.10gb",
                profile_id=19,
                placement=Placement(start=s, size=1),
                memory_mib=9728,
                sm_count=14,
                uuid=f"MIG-a100-{i}-{s}",
            )
            for s in range(7)
        ]
        mig_gpus.append(
            _gpu(
                "a100-mig", i, A100, mig=MigState(capable=True, current=True, state="enabled"), mig_instances=instances
            )
        )
    fleet.append(_inventory("a100-mig", mig_gpus))
    shared = [
        _gpu(
            "a100-ts",
            i,
            A100,
            mig=MigState(capable=True, state="disabled"),
            slices=[SliceOffer(kind="timeslice", count=4, memory_mib=81559, parent_uuid=f"GPU-a100-ts-{i}")],
        )
        for i in range(2)
    ]
    fleet.append(_inventory("a100-ts", shared))
    return fleet


@pytest.fixture
def postgres_database() -> Iterator[str]:
    base = _postgres_url_or_skip()
    schema = f"gfconc_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _start_replica(url: str, tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "GPUFABRIC_DATABASE_URL": url,
        "GPUFABRIC_DATA_DIR": str(tmp_path / name),
        "GPUFABRIC_SCHEDULER_ENABLED": "false",
        "GPUFABRIC_LOG_LEVEL": "WARNING",
        "GPUFABRIC_DB_POOL_SIZE": "12",
    }
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gpufabric")), "controller", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica {name} exited: {(tmp_path / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"replica {name} did not start")


def test_two_replicas_never_give_a_unit_twice(postgres_database: str, tmp_path: Path) -> None:
    db = Database(postgres_database, pool_size=2)
    upgrade(db.engine)
    with db.session() as session:
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="conc-bootstrap")
        tenant_tokens = [
            create_api_token(session, role=Role.tenant, name=f"t{i}", tenant=f"tenant-{i % 4}")[1]
            for i in range(CLIENTS)
        ]
    replicas = [_start_replica(postgres_database, tmp_path, f"replica-{i}") for i in range(2)]
    urls = [u for _, u in replicas]
    try:
        # Register the fleet through replica 0 only: replica 1 learns it from the store.
        with httpx.Client(base_url=urls[0], timeout=30) as anon:
            for inv in scarce_fleet():
                credential = register(anon, bootstrap, inv.host.hostname)
                assert report(anon, credential, inv, 1).status_code == 200

        outcomes: Counter[str] = Counter()
        errors: list[str] = []
        issued = iter(range(TOTAL_LEASES))
        issue_lock = threading.Lock()

        def client(n: int) -> None:
            rng = random.Random(n)
            held: list[str] = []
            clients = [
                httpx.Client(base_url=u, headers={"Authorization": f"Bearer {tenant_tokens[n]}"}, timeout=60)
                for u in urls
            ]
            try:
                while True:
                    with issue_lock:
                        i = next(issued, None)
                    if i is None:
                        break
                    api = clients[rng.randrange(2)]
                    if len(held) >= 3 or (held and rng.random() < 0.3):
                        lease_id = held.pop(rng.randrange(len(held)))
                        r = _retrying(clients[rng.randrange(2)].delete, f"/v1/leases/{lease_id}")
                        if r.status_code != 200 or r.json()["state"] != "released":
                            errors.append(f"release {lease_id}: {r.status_code} {r.text[:300]}")
                    body, key = rng.choice(REQUESTS), f"c{n}-{i}"
                    r = _retrying(api.post, "/v1/leases", json=body, headers={"Idempotency-Key": key})
                    if r.status_code == 201:
                        outcomes["created"] += 1
                        if r.json()["state"] != "ready":
                            errors.append(f"lease not ready: {r.text[:300]}")
                        held.append(r.json()["id"])
                    elif r.status_code == 409:
                        outcomes[r.json()["type"].rsplit("/", 1)[-1]] += 1
                    else:
                        errors.append(f"create: {r.status_code} {r.text[:300]}")
                for lease_id in held:
                    r = _retrying(clients[0].delete, f"/v1/leases/{lease_id}")
                    if r.status_code != 200:
                        errors.append(f"final release {lease_id}: {r.status_code}")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(f"client {n}: {exc!r}")
            finally:
                for c in clients:
                    c.close()

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        # A failure shows what the replicas logged (a 500's traceback is only there).
        assert not errors, (errors[:10], _log_tails(tmp_path))

        retried = 0
        for url in urls:
            metrics = httpx.get(url + "/metrics", timeout=10).text
            m = re.search(r"^gpufabric_lease_claim_conflicts_retried_total ([0-9.e+]+)$", metrics, re.M)
            retried += int(float(m.group(1))) if m else 0
        print(
            f"\n{TOTAL_LEASES} lease requests by {CLIENTS} clients on 2 replicas in {elapsed:.1f} s: "
            f"{TOTAL_LEASES / elapsed:.0f} requests/s, {outcomes['created'] / elapsed:.0f} leases/s; "
            f"outcomes {dict(outcomes)}; claim conflicts retried {retried}"
        )
        assert outcomes["created"] > TOTAL_LEASES // 4
        assert outcomes["no-capacity"] > 0, "the fleet must be scarce for this test to mean anything"

        check_invariants(db)

        # Full capacity again, through each replica: the whole fleet in a few leases, then released.
        whole = [
            {"slices": [{"kind": "gpu", "count": 8}], "nodes": 4, "topology": "any"},
            {"slices": [{"kind": "mig", "profile": "1g.10gb", "count": 14}]},
            {"slices": [{"kind": "timeslice", "count": 8}]},
        ]
        for url in urls:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tenant_tokens[0]}"}, timeout=30) as api:
                made = [api.post("/v1/leases", json=body) for body in whole]
                assert [r.status_code for r in made] == [201, 201, 201], [r.text for r in made]
                for r in made:
                    assert api.delete(f"/v1/leases/{r.json()['id']}").json()["state"] == "released"
        check_invariants(db)
    finally:
        for proc, _ in replicas:
            proc.terminate()
        for proc, _ in replicas:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()


def _retrying(send: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> httpx.Response:
    """What a client does with 503 ``database-busy`` (the database rolled the request back; docs/api.md): send it
    again after ``Retry-After``, with the same Idempotency-Key, a few times. Anything else is the answer."""
    for _ in range(4):
        r = send(*args, **kwargs)
        if r.status_code != 503 or not r.json().get("type", "").endswith("/database-busy"):
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))
    return send(*args, **kwargs)


def _log_tails(tmp_path: Path, chars: int = 4000) -> dict[str, str]:
    return {log.name: log.read_text(errors="replace")[-chars:] for log in sorted(tmp_path.glob("replica-*.log"))}


def check_invariants(db: Database) -> None:
    with db.engine.connect() as conn:
        claims = conn.execute(
            text("SELECT lease_id, resource, slot, allocation, claimed_at, released_at FROM slice_claims")
        ).all()
        leases = {r[0]: r for r in conn.execute(text("SELECT id, state, allocations FROM leases")).all()}
        transitions = conn.execute(
            text("SELECT lease_id, from_state, to_state FROM lease_transitions ORDER BY id")
        ).all()
    assert claims, "no claims were made"
    # 1. Nothing is live after everything was released.
    assert [c for c in claims if c.released_at is None] == []
    # 2. No unit was ever held by two leases at once: per (resource, slot), intervals do not overlap.
    by_unit: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for c in claims:
        by_unit[(c.resource, c.slot)].append(c)
    for unit, rows in by_unit.items():
        rows.sort(key=lambda c: c.claimed_at)
        for prev, nxt in itertools.pairwise(rows):
            assert prev.released_at <= nxt.claimed_at, f"{unit} held by {prev.lease_id} and {nxt.lease_id} at once"
    # 3. Every lease walked the state machine and ended released; its claims match its allocations.
    walk: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    for lease_id, a, b in transitions:
        walk[lease_id].append((a, b))
    per_lease: Counter[str] = Counter(c.lease_id for c in claims)
    for lease_id, (_, state, allocations) in leases.items():
        steps = walk[lease_id]
        assert steps[0] == (None, "requested")
        for (_, b), (a2, _) in itertools.pairwise(steps):
            assert a2 == b
        assert all(b in TRANSITIONS[a] for a, b in steps[1:] if a is not None), steps  # type: ignore[index]
        assert state == "released" and steps[-1][1] == "released", (lease_id, steps)
        units = sum(a["placement"]["size"] if a["kind"] == "mig" else a["units"] for a in allocations)
        assert per_lease[lease_id] == units, (lease_id, per_lease[lease_id], units)
