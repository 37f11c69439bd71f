"""The crash suite: a controller replica killed (``os._exit``) after each step of creating and releasing a lease,
on PostgreSQL with two replicas; after every crash and restart nothing may stay stranded: no transitional lease,
live claims equal to the holding leases' allocations, quota usage equal to the holding leases.

The static backend here; the EKS backend (moto + the Kubernetes API emulator, whose namespaces must match the
holding leases) in tests/controller/backends/eks/test_eks_crash_recovery.py. Each case prints how long recovery took after
the restart (docs/reliability.md records the figures).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.auth.tokens import Role, create_api_token
from controller.leases.faults import POINTS
from controller.store.db import Database
from controller.store.schema import upgrade
from tests.controller.test_lease_concurrency import postgres_database  # noqa: F401  (fixture)
from tests.support.crash_harness import Replica, crash, invariant_violations, wait_until_clean
from tests.support.helpers import register, report, synthetic_inventory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TENANT = "crash-tenant"
GPU2 = {"slices": [{"kind": "gpu", "count": 2}]}
CREATE_POINTS = [p for p in POINTS if p.startswith("create.")]
RELEASE_POINTS = [p for p in POINTS if p.startswith("release.")]


class Fabric:
    label = "static"

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.db = Database(url, pool_size=2)
        upgrade(self.db.engine)
        with self.db.session() as session:
            _, self.admin = create_api_token(session, role=Role.admin, name="crash-admin")
            _, self.tenant = create_api_token(session, role=Role.tenant, name="crash-tenant", tenant=TENANT)
            _, self.bootstrap = create_api_token(session, role=Role.bootstrap, name="crash-bootstrap")
        self.a = Replica("replica-a", url, tmp_path, scheduler=True)
        self.b = Replica("replica-b", url, tmp_path, scheduler=False).start()
        self.recovery_s: dict[str, float] = {}

    def fleet(self, hosts: int = 2, gpus: int = 4) -> None:
        with httpx.Client(base_url=self.b.url, timeout=30) as anon:
            for i in range(hosts):
                name = f"crash-{i}"
                credential = register(anon, self.bootstrap, name)
                assert report(anon, credential, synthetic_inventory(name, gpus=gpus), 1).status_code == 200
        with self.b.client(self.admin) as admin:
            put = admin.put(f"/v1/quotas/{TENANT}", json={"limits": [{"kind": "gpu", "model": "*", "limit": 100}]})
            assert put.status_code == 200, put.text

    def quota_in_use(self) -> dict[str, int]:
        with self.b.client(self.admin) as admin:
            limits = admin.get(f"/v1/quotas/{TENANT}").json()["limits"]
        return {TENANT: sum(q["in_use"] for q in limits)}

    def clean(self) -> list[str]:
        return invariant_violations(self.db, self.quota_in_use)

    def lease(self, lease_id: str) -> dict[str, Any]:
        with self.b.client(self.tenant) as api:
            body: dict[str, Any] = api.get(f"/v1/leases/{lease_id}").json()
            return body

    def crash_creating(self, point: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Kill replica A at ``point`` while it creates a lease, restart it and wait until nothing is stranded;
        returns the tenant's leases then (recovery must have made the one lease ready)."""
        crash(self.a, point, self.tenant, "POST", "/v1/leases", body)
        assert self.clean(), "the crash must leave the lease half-way"
        self.a.start()
        self.recovery_s[point] = wait_until_clean(self.clean, what=f"{self.label} {point}")
        with self.b.client(self.tenant) as api:
            leases: list[dict[str, Any]] = api.get("/v1/leases").json()
        assert [x["state"] for x in leases] == ["ready"], leases
        return leases

    def crash_releasing(self, point: str, body: dict[str, Any], backend_matches: Callable[[], list[str]]) -> None:
        """Take a lease (the backend must match the store), kill replica A at ``point`` while it releases it,
        restart it and wait until nothing is stranded: the lease ends released."""
        with self.b.client(self.tenant) as api:
            lease = api.post("/v1/leases", json=body).json()
        assert lease["state"] == "ready" and backend_matches() == [], lease
        crash(self.a, point, self.tenant, "DELETE", f"/v1/leases/{lease['id']}")
        self.a.start()
        self.recovery_s[point] = wait_until_clean(self.clean, what=f"{self.label} {point}")
        assert self.lease(lease["id"])["state"] == "released"

    def close(self) -> None:
        """Stop both replicas; print how long recovery took per crash case (docs/reliability.md quotes them)."""
        self.a.stop()
        self.b.stop()
        self.db.dispose()
        if self.recovery_s:
            figures = ", ".join(f"{k} {v:.1f} s" for k, v in self.recovery_s.items())
            print(f"\n{self.label} recovery after restart: {figures}")


@pytest.fixture
def fabric(postgres_database: str, tmp_path: Path) -> Iterator[Fabric]:  # noqa: F811
    f = Fabric(postgres_database, tmp_path)
    try:
        f.fleet()
        yield f
    finally:
        f.close()


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_a_crash_while_creating_leaves_nothing_stranded(fabric: Fabric, point: str) -> None:
    key = f"crash-{uuid.uuid4().hex[:8]}"
    crash(fabric.a, point, fabric.tenant, "POST", "/v1/leases", GPU2, headers={"Idempotency-Key": key})
    assert fabric.clean(), "the crash must have left the lease half-way for this test to mean anything"
    fabric.a.start()
    fabric.recovery_s[point] = wait_until_clean(fabric.clean, what=point)
    # The client's retry with its Idempotency-Key finds the lease, provisioned by recovery.
    with fabric.b.client(fabric.tenant) as api:
        again = api.post("/v1/leases", json=GPU2, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["state"] == "ready", again.text
    assert len(again.json()["result"]["cuda_visible_devices"].split(",")) == 2


@pytest.mark.parametrize("point", RELEASE_POINTS)
def test_a_crash_while_releasing_leaves_nothing_stranded(fabric: Fabric, point: str) -> None:
    with fabric.b.client(fabric.tenant) as api:
        lease = api.post("/v1/leases", json=GPU2).json()
    assert lease["state"] == "ready"

    crash(fabric.a, point, fabric.tenant, "DELETE", f"/v1/leases/{lease['id']}")
    assert fabric.lease(lease["id"])["state"] == "releasing"
    fabric.a.start()
    fabric.recovery_s[point] = wait_until_clean(fabric.clean, what=point)
    assert fabric.lease(lease["id"])["state"] == "released"
    # The capacity is back: the whole fleet can be leased again.
    with fabric.b.client(fabric.tenant) as api:
        whole = api.post("/v1/leases", json={"slices": [{"kind": "gpu", "count": 4}], "nodes": 2, "topology": "any"})
        assert whole.status_code == 201, whole.text
        assert api.delete(f"/v1/leases/{whole.json()['id']}").json()["state"] == "released"


def test_a_delete_on_another_replica_drives_a_crashed_release_forward(fabric: Fabric) -> None:
    with fabric.b.client(fabric.tenant) as api:
        lease = api.post("/v1/leases", json=GPU2).json()

    crash(fabric.a, "release.marked", fabric.tenant, "DELETE", f"/v1/leases/{lease['id']}")

    # A stays down. The tenant retries on B: once A's liveness row is stale, B finishes the release itself.
    def retried() -> list[str]:
        with fabric.b.client(fabric.tenant) as api:
            state = api.delete(f"/v1/leases/{lease['id']}").json()["state"]
        return [] if state == "released" else [f"lease {lease['id']} is {state}"]

    fabric.recovery_s["delete on B"] = wait_until_clean(retried, what="DELETE on replica B")
    assert fabric.clean() == []


def test_a_crash_during_recovery_is_recovered_too(fabric: Fabric) -> None:
    with fabric.b.client(fabric.tenant) as api:
        lease = api.post("/v1/leases", json=GPU2).json()

    crash(fabric.a, "release.marked", fabric.tenant, "DELETE", f"/v1/leases/{lease['id']}")
    # Restarted, A leads, takes the lease over and dies again right after taking it.
    fabric.a.start(crash_at="recover.taken")
    fabric.a.wait_crashed()
    assert fabric.lease(lease["id"])["state"] == "releasing"
    fabric.a.start()
    fabric.recovery_s["recover.taken"] = wait_until_clean(fabric.clean, what="recover.taken")
    assert fabric.lease(lease["id"])["state"] == "released"
