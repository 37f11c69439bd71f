"""Leases a controller left half-way are finished or failed, never stranded (SQLite and PostgreSQL, in-process).

The states below are the ones a ``kill -9`` leaves (the crash suite, test_crash_recovery.py, makes them with real
crashes on PostgreSQL); here they are written into the store directly, next to a backend whose release or
provisioning fails, so each recovery rule is checked on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from controller.backends.contract import LeaseInfo, ProvisionResult
from controller.backends.static.backend import StaticBackend
from controller.jobs.hooks import JobContext
from controller.leases.state import TRANSITIONAL
from controller.placement import Allocation
from controller.store.models import AuditEntry, ControllerInstance, Lease
from tests.controller.test_leases import create, fleet, live_claims
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, static_backend_replaced

GPU1 = {"slices": [{"kind": "gpu", "count": 1}]}


class FlakyStatic(StaticBackend):
    """The static backend with switchable faults: a release that fails, provisioning that hangs or raises."""

    release_error: str | None = None
    provision_mode: str = "normal"  # "normal" | "pending" | "raise"
    releases: list[str] = []

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        if self.provision_mode == "pending":
            return ProvisionResult("pending", message="waiting for the cloud")
        if self.provision_mode == "raise":
            raise ConnectionError("cloud API unreachable")
        return super().provision(lease, allocations)

    def release(self, lease: LeaseInfo) -> None:
        type(self).releases.append(lease.id)
        if self.release_error:
            raise RuntimeError(self.release_error)


@pytest.fixture
def flaky(controller: Controller) -> Iterator[type[FlakyStatic]]:
    FlakyStatic.release_error = None
    FlakyStatic.provision_mode = "normal"
    FlakyStatic.releases = []
    with static_backend_replaced(controller.server.app, FlakyStatic):
        yield FlakyStatic


def recover(controller: Controller) -> None:
    hook = controller.server.app.state.hooks.hooks["lease-recovery:leases"]
    hook.run(JobContext(db=controller.db, settings=controller.settings))


def lease_row(controller: Controller, lease_id: str) -> dict[str, Any]:
    with controller.db.session() as session:
        row = session.get(Lease, lease_id)
        assert row is not None
        return {"state": row.state, "owner": row.owner, "deadline": row.deadline, "reason": row.reason}


def strand(controller: Controller, lease_id: str, state: str, owner: str | None, deadline_in_s: float) -> None:
    """Leave the lease as a controller that crashed in ``state`` leaves it."""
    with controller.db.session() as session:
        session.execute(
            update(Lease)
            .where(Lease.id == lease_id)
            .values(state=state, owner=owner, deadline=datetime.now(UTC) + timedelta(seconds=deadline_in_s))
        )


def test_transitional_states_carry_an_owner_and_a_deadline_and_ready_clears_them(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    flaky.provision_mode = "pending"
    with controller.client(controller.tenant_token) as api:
        pending = create(api, GPU1).json()
    row = lease_row(controller, pending["id"])
    # Waiting for the cloud: nobody drives it (an outside event or the deadline does), the deadline is set.
    assert row["state"] == "provisioning" and row["owner"] is None
    assert row["deadline"] > datetime.now(UTC) + timedelta(
        seconds=controller.settings.lease_provisioning_timeout_s - 60
    )
    flaky.provision_mode = "normal"
    with controller.client(controller.tenant_token) as api:
        ready = create(api, GPU1).json()
    assert lease_row(controller, ready["id"]) | {"reason": ""} == {
        "state": "ready", "owner": None, "deadline": None, "reason": ""
    }  # fmt: skip


def test_a_failed_backend_release_keeps_the_claims_and_is_retried_until_it_succeeds(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
        flaky.release_error = "Ironic API: 503"
        after = api.delete(f"/v1/leases/{lease['id']}").json()
    # Not failed-with-claims (stranded for good, as before): still releasing, the reason says why and when.
    assert after["state"] == "releasing" and "Ironic API: 503" in after["reason"] and "retrying" in after["reason"]
    assert live_claims(controller) == 1
    row = lease_row(controller, lease["id"])
    assert row["owner"] is None and row["deadline"] > datetime.now(UTC)
    recover(controller)  # before its retry time: left alone
    assert lease_row(controller, lease["id"])["state"] == "releasing" and len(flaky.releases) == 1
    # A second failure backs off further.
    strand(controller, lease["id"], "releasing", None, -1)
    recover(controller)
    second = lease_row(controller, lease["id"])
    assert second["state"] == "releasing" and "2 attempts" in second["reason"] and len(flaky.releases) == 2
    assert second["deadline"] > datetime.now(UTC) + timedelta(seconds=20)
    # The backend works again: a DELETE drives the release forward at once, without waiting for the retry.
    flaky.release_error = None
    with controller.client(controller.tenant_token) as api:
        done = api.delete(f"/v1/leases/{lease['id']}").json()
    assert done["state"] == "released" and live_claims(controller) == 0


@pytest.mark.parametrize("how", ["delete", "recovery-job"])
def test_a_release_left_half_way_by_a_crashed_controller_completes(
    controller: Controller, flaky: type[FlakyStatic], how: str
) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
    strand(controller, lease["id"], "releasing", "crashed-replica", 500)
    with controller.client(controller.tenant_token) as api:
        if how == "delete":
            assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
        else:
            recover(controller)
        assert api.get(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    assert live_claims(controller) == 0 and flaky.releases == [lease["id"]]
    with controller.db.session() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "lease.recover")).all()
    if how == "recovery-job":
        assert [a.target for a in audit] == [lease["id"]] and "crashed-replica" in audit[0].detail["why"]


def test_a_lease_driven_by_a_live_replica_is_left_to_it(controller: Controller, flaky: type[FlakyStatic]) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
    with controller.db.session() as session:
        now = datetime.now(UTC)
        session.add(ControllerInstance(instance_id="busy-replica", started_at=now, seen_at=now))
    strand(controller, lease["id"], "releasing", "busy-replica", 500)
    recover(controller)
    with controller.client(controller.tenant_token) as api:
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "releasing"
    assert flaky.releases == [] and live_claims(controller) == 1
    # That replica goes quiet for longer than instance_timeout_s: it is gone, and its lease is finished.
    with controller.db.session() as session:
        session.execute(
            update(ControllerInstance).values(
                seen_at=datetime.now(UTC) - timedelta(seconds=controller.settings.instance_timeout_s + 1)
            )
        )
    recover(controller)
    assert lease_row(controller, lease["id"])["state"] == "released" and live_claims(controller) == 0


def test_provisioning_interrupted_by_a_crash_is_provisioned_again_and_a_replay_drives_it(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=2)
    with controller.client(controller.tenant_token) as api:
        by_job = create(api, GPU1).json()
        by_replay = create(api, GPU1, key="job-42").json()
    for lease in (by_job, by_replay):
        strand(controller, lease["id"], "provisioning", "crashed-replica", 500)
    recover(controller)
    assert lease_row(controller, by_job["id"])["state"] == "ready"
    # The job already took both; strand the second again and let the client's retry with its key find it.
    strand(controller, by_replay["id"], "provisioning", "crashed-replica", 500)
    with controller.client(controller.tenant_token) as api:
        again = create(api, GPU1, key="job-42")
    assert again.status_code == 200 and again.json()["id"] == by_replay["id"] and again.json()["state"] == "ready"
    assert live_claims(controller) == 2


def test_provisioning_past_its_deadline_is_released_at_the_backend_and_failed(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    flaky.provision_mode = "pending"
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
    strand(controller, lease["id"], "provisioning", None, -1)
    recover(controller)
    row = lease_row(controller, lease["id"])
    assert (
        row["state"] == "failed"
        and "did not finish within" in row["reason"]
        and "waiting for the cloud" in row["reason"]
    )
    assert flaky.releases == [lease["id"]] and live_claims(controller) == 0
    with controller.client(controller.tenant_token) as api:
        states = [t["to_state"] for t in api.get(f"/v1/leases/{lease['id']}").json()["transitions"]]
    assert states[-2:] == ["releasing", "failed"]


def test_a_backend_error_while_provisioning_fails_the_lease_through_a_release(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    flaky.provision_mode = "raise"
    with controller.client(controller.tenant_token) as api:
        made = create(api, GPU1)
    lease = assert_problem(made, 409, "lease-failed")["lease"]
    assert lease["state"] == "failed" and "cloud API unreachable" in lease["reason"], lease
    assert flaky.releases == [lease["id"]] and live_claims(controller) == 0


def test_a_placing_lease_past_its_deadline_fails_and_nothing_transitional_is_left(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    strand(controller, lease["id"], "placing", controller.settings.instance_id, -1)
    recover(controller)
    assert lease_row(controller, lease["id"])["state"] == "failed"
    with controller.db.session() as session:
        assert session.scalars(select(Lease.id).where(Lease.state.in_(TRANSITIONAL))).all() == []


def test_recovery_forgets_instances_gone_for_long_once_no_lease_names_them(
    controller: Controller, flaky: type[FlakyStatic]
) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, GPU1).json()
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with controller.db.session() as session:
        for name in ("gone-replica", "gone-owner"):
            session.add(ControllerInstance(instance_id=name, started_at=long_ago, seen_at=long_ago))
    # The gone owner's lease is taken over first (its release fails and rests without an owner), then its row goes.
    strand(controller, lease["id"], "releasing", "gone-owner", 500)
    flaky.release_error = "still down"
    recover(controller)
    assert lease_row(controller, lease["id"])["owner"] is None
    with controller.db.session() as session:
        names = set(session.scalars(select(ControllerInstance.instance_id)))
    assert not names & {"gone-replica", "gone-owner"} and controller.settings.instance_id in names
