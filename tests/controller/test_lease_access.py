"""The lease's ``access`` plumbing, whatever the backend: a backend's ``result["access"]`` reaches the lease's tenant
and admins only, sealed in the store, and is gone once the lease expires (or is released, or fails)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from controller.api.app import create_app
from controller.backends.contract import LeaseInfo, ProvisionResult
from controller.backends.registry import BackendRegistry
from controller.backends.static.backend import StaticBackend
from controller.placement import Allocation
from controller.testing import ServerThread
from tests.support.controller import Controller
from tests.support.helpers import register, report, synthetic_inventory

SECRET = "pw-7f3c9a1e-handed-to-the-tenant"


class StaticWithAccess(StaticBackend):
    """The static kind, handing out a credential with each lease (as a cloud backend does)."""

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        ready = super().provision(lease, allocations)
        return ProvisionResult("ready", {**ready.result, "access": {"kind": "test", "password": SECRET}})


@pytest.fixture
def served(controller: Controller) -> Iterator[ServerThread]:
    server = ServerThread(
        create_app(controller.settings, db=controller.db, backends=BackendRegistry([StaticWithAccess(controller.db)]))
    ).start()
    try:
        with httpx.Client(base_url=server.url) as anon:
            credential = register(anon, controller.bootstrap_token, "gpu-01")
            assert report(anon, credential, synthetic_inventory("gpu-01"), 1).status_code == 200
        yield server
    finally:
        server.stop()


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_access_reaches_its_tenant_and_admins_sealed_and_ends_with_the_lease(
    controller: Controller, served: ServerThread
) -> None:
    url = served.url
    with client(url, controller.tenant_token) as tenant, client(url, controller.admin_token) as admin:
        made = tenant.post("/v1/leases", json={"slices": [{"kind": "gpu", "count": 1}], "duration": 600})
        assert made.status_code == 201, made.text
        lease: dict[str, Any] = made.json()
        assert lease["access"] == {"kind": "test", "password": SECRET} and "access" not in lease["result"]
        assert tenant.get(f"/v1/leases/{lease['id']}").json()["access"] == lease["access"]
        assert admin.get(f"/v1/leases/{lease['id']}").json()["access"] == lease["access"]
        assert admin.get("/v1/leases").json()[0]["access"] is None  # lists never carry it
        globex = admin.post("/v1/tokens", json={"role": "tenant", "tenant": "globex", "name": "g"}).json()["token"]
        with client(url, globex) as other:
            assert other.get(f"/v1/leases/{lease['id']}").status_code == 404
        with controller.db.engine.connect() as conn:
            (sealed,) = conn.execute(text("SELECT access_sealed FROM leases")).one()
            stored = [str(r) for r in conn.execute(text("SELECT * FROM leases")).all()]
            stored += [str(r) for r in conn.execute(text("SELECT * FROM audit_log")).all()]
        assert sealed and not any(SECRET in row for row in stored)

        # The lease's duration is over: the expiry releases it, and the access goes with it.
        later = datetime.now(UTC) + timedelta(hours=1)
        assert served.app.state.leases.expire(now=later) == [lease["id"]]
        expired = tenant.get(f"/v1/leases/{lease['id']}").json()
        assert expired["state"] == "released" and expired["access"] is None
        with controller.db.engine.connect() as conn:
            assert conn.execute(text("SELECT access_sealed FROM leases")).scalar_one() is None
