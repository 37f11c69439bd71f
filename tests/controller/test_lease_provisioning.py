"""Provisioning outcomes through HTTP: a backend that says "try elsewhere" moves the lease to the next
candidate (and gives up with every reason on record), quotas hold against a concurrent claim of another
replica, and the scheduler's lease-expiry job releases an expired lease."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from controller.backends.contract import LeaseInfo, ProvisionResult, TryElsewhere
from controller.backends.static.backend import StaticBackend
from controller.jobs.hooks import JobContext
from controller.leases.errors import QuotaExceeded
from controller.leases.provisioning import MAX_CANDIDATES
from controller.leases.service import LeaseService
from controller.placement import Allocation
from controller.store.models import Lease, SliceClaim
from tests.controller.test_leases import create, fleet, live_claims
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, static_backend_replaced, synthetic_inventory


class PickyStatic(StaticBackend):
    """The static backend, except that it cannot use the hosts in ``refuse`` (like Nova's No valid host)."""

    refuse: frozenset[str] = frozenset()
    calls: list[list[str]] = []

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        type(self).calls.append(list(lease.hosts))
        bad = sorted(set(lease.hosts) & self.refuse)
        if bad:
            raise TryElsewhere(f"no valid host was found on {', '.join(bad)}", hosts=bad)
        return super().provision(lease, allocations)


@pytest.fixture
def picky(controller: Controller) -> Iterator[type[PickyStatic]]:
    PickyStatic.calls = []
    with static_backend_replaced(controller.server.app, PickyStatic):
        yield PickyStatic


def test_try_elsewhere_moves_the_lease_to_the_next_candidate(controller: Controller, picky: type[PickyStatic]) -> None:
    hosts = fleet(controller, hosts=3)
    picky.refuse = frozenset(hosts[:2])
    with controller.client(controller.tenant_token) as api:
        made = create(api, {"slices": [{"kind": "gpu", "count": 2}]})
        assert made.status_code == 201, made.text
        lease = made.json()
    assert lease["state"] == "ready", lease
    assert lease["result"]["host"] == hosts[2]
    assert {a["host"] for a in lease["allocations"]} == {hosts[2]}
    assert len(picky.calls) == 3 and {c[0] for c in picky.calls[:2]} == set(hosts[:2])
    assert picky.calls[2] == [hosts[2]]
    states = [t["to_state"] for t in lease["transitions"]]
    assert states == [
        "requested", "placing", "provisioning", "placing", "provisioning", "placing", "provisioning", "ready"
    ]  # fmt: skip
    assert "no valid host" in lease["transitions"][3]["reason"]
    with controller.db.session() as session:
        row = session.get(Lease, lease["id"])
        assert row is not None
        assert [a["hosts"] for a in row.placement["failed_attempts"]] == [[c[0]] for c in picky.calls[:2]]
        claimed_on = set(session.scalars(select(SliceClaim.device_uuid).where(SliceClaim.released_at.is_(None))))
    assert claimed_on == {f"GPU-{hosts[2]}-0", f"GPU-{hosts[2]}-1"}
    assert live_claims(controller) == 2


def test_try_elsewhere_fails_the_lease_when_no_candidate_is_left(
    controller: Controller, picky: type[PickyStatic]
) -> None:
    hosts = fleet(controller, hosts=2)
    picky.refuse = frozenset(hosts)
    with controller.client(controller.tenant_token) as api:
        problem = assert_problem(create(api, {"slices": [{"kind": "gpu"}]}), 409, "lease-failed")
    lease = problem["lease"]
    assert lease["state"] == "failed" and problem["lease_id"] == lease["id"]
    assert problem["failure_reason"] == lease["failure_reason"] == lease["reason"]
    # The tenant is told how many hosts were tried and why, not which (controller/api/redaction.py); admins are.
    assert "2 host(s) already tried" in lease["reason"] and not any(h in str(problem) for h in hosts)
    with controller.admin() as admin:
        full = admin.get(f"/v1/leases/{lease['id']}").json()
    assert all(h in full["reason"] for h in hosts) and sorted(full["placement"]["tried_hosts"]) == sorted(hosts)
    assert live_claims(controller) == 0
    assert len(picky.calls) == 2
    # Capacity is whole again for a backend that accepts.
    picky.refuse = frozenset()
    with controller.client(controller.tenant_token) as api:
        assert create(api, {"slices": [{"kind": "gpu", "count": 2}], "nodes": 2}).json()["state"] == "ready"


def test_try_elsewhere_gives_up_after_max_candidates(controller: Controller, picky: type[PickyStatic]) -> None:
    hosts = fleet(controller, hosts=MAX_CANDIDATES + 2)
    picky.refuse = frozenset(hosts)
    with controller.client(controller.tenant_token) as api:
        lease = assert_problem(create(api, {"slices": [{"kind": "gpu"}]}), 409, "lease-failed")["lease"]
    assert lease["state"] == "failed"
    assert lease["reason"].startswith(f"provisioning failed on {MAX_CANDIDATES} candidates")
    assert len(picky.calls) == MAX_CANDIDATES
    assert live_claims(controller) == 0


def test_quota_holds_against_a_concurrent_claim_on_another_replica(controller: Controller) -> None:
    """Replica B decides within quota, then replica A (the HTTP app) claims for the same tenant before B
    writes: the store's check refuses B's claim whole, with a 403-style error naming the quota."""
    fleet(controller, hosts=1)
    with controller.client() as anon:
        credential = register(anon, controller.bootstrap_token, "a100-host")
        inventory = synthetic_inventory("a100-host", gpus=2, model="NVIDIA A100-SXM4-80GB")
        assert report(anon, credential, inventory, 1).status_code == 200
    with controller.admin() as admin:
        put = admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "model": "*", "limit": 2}]})
        assert put.status_code == 200, put.text
    replica_b = LeaseService(controller.db, backends=controller.server.app.state.backends).load()
    claim = replica_b.engine.claim
    raced: list[int] = []

    def claim_after_a_concurrent_lease(decision, claim_id=None):  # type: ignore[no-untyped-def]
        with controller.client(controller.tenant_token) as api:
            raced.append(create(api, {"slices": [{"kind": "gpu", "count": 1, "model": "A100"}]}).status_code)
        return claim(decision, claim_id)

    replica_b.engine.claim = claim_after_a_concurrent_lease  # type: ignore[method-assign]
    with pytest.raises(QuotaExceeded) as refused:
        replica_b.create({"slices": [{"kind": "gpu", "count": 2, "model": "H100"}]}, "acme", None)
    assert raced == [201]
    assert refused.value.status == 403 and refused.value.extensions["quota"] == "gpu:*"
    assert live_claims(controller) == 1
    assert not replica_b.engine.claims, "replica B gave its index claim back"
    with controller.db.session() as session:
        assert session.scalar(select(Lease).where(Lease.state == "provisioning")) is None
    with controller.client(controller.tenant_token) as api:
        # Through HTTP the same refusal is a problem+json 403 (the engine's own quota check, before the claim).
        assert_problem(create(api, {"slices": [{"kind": "gpu", "count": 2}]}), 403, "quota-exceeded")


def test_the_lease_expiry_job_releases_expired_leases(controller: Controller) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, {"slices": [{"kind": "gpu"}], "duration": "PT1H"}).json()
        keep = create(api, {"slices": [{"kind": "gpu"}]}).json()
    with controller.db.session() as session:
        session.execute(
            update(Lease).where(Lease.id == lease["id"]).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    hook = controller.server.app.state.hooks.hooks["lease-expiry:leases"]
    hook.run(JobContext(db=controller.db, settings=controller.settings))
    with controller.client(controller.tenant_token) as api:
        expired = api.get(f"/v1/leases/{lease['id']}").json()
        assert expired["state"] == "released" and expired["reason"].startswith("expired")
        assert api.get(f"/v1/leases/{keep['id']}").json()["state"] == "ready"
    assert live_claims(controller) == 1


def test_a_lease_left_placing_by_a_crashed_controller_is_failed_by_the_recovery_job(controller: Controller) -> None:
    fleet(controller, hosts=1)
    with controller.client(controller.tenant_token) as api:
        lease = create(api, {"slices": [{"kind": "gpu"}]}).json()
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    # As a controller that died between releasing the claims and placing the lease again leaves it: owned by an
    # instance with no liveness row, its deadline still ahead.
    with controller.db.session() as session:
        session.execute(
            update(Lease)
            .where(Lease.id == lease["id"])
            .values(state="placing", owner="crashed-replica", deadline=datetime.now(UTC) + timedelta(seconds=300))
        )
    hook = controller.server.app.state.hooks.hooks["lease-recovery:leases"]
    hook.run(JobContext(db=controller.db, settings=controller.settings))
    with controller.client(controller.tenant_token) as api:
        stale = api.get(f"/v1/leases/{lease['id']}").json()
    assert stale["state"] == "failed" and "interrupted" in stale["reason"] and "crashed-replica" in stale["reason"]
    assert live_claims(controller) == 0
