"""Asynchronous lease semantics through HTTP: 201 when ready at once, 202 + Location while not, 409 lease-failed
(naming the stored lease and its reason) when provisioning failed before the answer, and ``?wait=N`` long-polls
that see a change made by another replica (a store re-read, not an in-process signal)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from controller.auth.tokens import Role, create_api_token
from controller.backends.contract import LeaseInfo, ProvisionFailed, ProvisionResult
from controller.backends.static.backend import StaticBackend
from controller.leases.service import LeaseService
from controller.placement import Allocation
from controller.store.models import Lease
from tests.controller.test_leases import create, fleet, live_claims
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, static_backend_replaced

GPU1 = {"slices": [{"kind": "gpu", "count": 1}]}


class SlowStatic(StaticBackend):
    """The static backend, except that it answers ``pending`` until ``ready`` is set (like a cloud deploying)."""

    ready = False

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        if not type(self).ready:
            return ProvisionResult("pending", message="the test has not finished deploying")
        return super().provision(lease, allocations)


class BrokenStatic(StaticBackend):
    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        raise ProvisionFailed("the hypervisor is on fire")


@pytest.fixture
def slow(controller: Controller) -> Iterator[type[SlowStatic]]:
    SlowStatic.ready = False
    with static_backend_replaced(controller.server.app, SlowStatic):
        yield SlowStatic


def test_ready_at_once_is_201_and_a_long_poll_answers_at_once(controller: Controller) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        made = create(api, GPU1)
        assert made.status_code == 201, made.text
        lease = made.json()
        assert lease["state"] == "ready" and lease["failure_reason"] is None
        assert made.headers["location"] == f"/v1/leases/{lease['id']}"
        t0 = time.monotonic()
        again = api.get(f"/v1/leases/{lease['id']}", params={"wait": 30})
        assert again.status_code == 200 and again.json()["state"] == "ready"
        assert time.monotonic() - t0 < 2, "a lease that is not changing by itself is answered at once"


def test_pending_is_202_and_a_long_poll_sees_another_replica_finish_it(
    controller: Controller, slow: type[SlowStatic]
) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        made = create(api, GPU1, key="slow-1")
        assert made.status_code == 202, made.text
        lease = made.json()
        assert lease["state"] == "provisioning" and lease["reason"] == "the test has not finished deploying"
        assert made.headers["location"] == f"/v1/leases/{lease['id']}" and made.headers["retry-after"] == "1"
        # A replay of the key answers the same lease, still accepted (202), and makes no second lease.
        replay = create(api, GPU1, key="slow-1")
        assert replay.status_code == 202 and replay.json()["id"] == lease["id"]

        # Nothing changes: the long-poll holds for the time asked, then answers the lease unchanged.
        t0 = time.monotonic()
        held = api.get(f"/v1/leases/{lease['id']}", params={"wait": 0.6})
        assert 0.55 <= time.monotonic() - t0 < 5
        assert held.status_code == 200 and held.json()["state"] == "provisioning"

        # Replica B (its own lease service on the same store) finishes the lease while a long-poll waits on A.
        replica_b = LeaseService(controller.db, backends=controller.server.app.state.backends).load()

        def finish() -> None:
            time.sleep(0.5)
            slow.ready = True
            replica_b.reprovision(lease["id"])

        finisher = threading.Thread(target=finish)
        t0 = time.monotonic()
        finisher.start()
        waited = api.get(f"/v1/leases/{lease['id']}", params={"wait": 20})
        elapsed = time.monotonic() - t0
        finisher.join()
        assert waited.status_code == 200, waited.text
        body = waited.json()
        assert body["state"] == "ready", body
        assert 0.4 <= elapsed < 5, elapsed
        assert [t["to_state"] for t in body["transitions"]][-1] == "ready"
        replay = create(api, GPU1, key="slow-1")
        assert replay.status_code == 200 and replay.json()["state"] == "ready"


def test_a_failed_creation_is_409_naming_the_lease_and_its_reason(controller: Controller) -> None:
    fleet(controller, hosts=1)
    with (
        controller.client(controller.tenant_token) as api,
        static_backend_replaced(controller.server.app, BrokenStatic),
    ):
        made = create(api, GPU1, key="broken-1")
        problem = assert_problem(made, 409, "lease-failed")
        lease_id = problem["lease_id"]
        assert made.headers["location"] == f"/v1/leases/{lease_id}"
        assert problem["state"] == "failed" and "the hypervisor is on fire" in problem["failure_reason"]
        assert problem["failure_reason"] in problem["detail"] and lease_id in problem["detail"]
        assert problem["lease"]["id"] == lease_id and problem["lease"]["transitions"][-1]["to_state"] == "failed"
        shown = api.get(f"/v1/leases/{lease_id}").json()
        assert shown["state"] == "failed" and shown["failure_reason"] == problem["failure_reason"]
        # The same key again: the same failed lease, answered the same way; nothing new is claimed.
        again = assert_problem(create(api, GPU1, key="broken-1"), 409, "lease-failed")
        assert again["lease_id"] == lease_id
    assert live_claims(controller) == 0
    with controller.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Lease)) == 1


def test_wait_is_bounded_and_only_for_the_leases_owner(controller: Controller, slow: type[SlowStatic]) -> None:
    fleet(controller, hosts=1)
    with controller.db.session() as session:
        _, other = create_api_token(session, role=Role.tenant, name="other", tenant="globex")
    with controller.client(controller.tenant_token) as api, controller.client(other) as globex:
        lease = create(api, GPU1).json()
        for bad in ("61", "-1", "nan", "soon"):
            problem = assert_problem(
                api.get(f"/v1/leases/{lease['id']}", params={"wait": bad}), 422, "validation-error"
            )
            assert problem["errors"][0]["loc"] == ["query", "wait"], problem
        t0 = time.monotonic()
        assert_problem(globex.get(f"/v1/leases/{lease['id']}", params={"wait": 5}), 404, "not-found")
        assert time.monotonic() - t0 < 2, "another tenant's lease is refused before any wait"
        assert_problem(api.get("/v1/leases/nope", params={"wait": 5}), 404, "not-found")
