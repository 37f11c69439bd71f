"""Leases through HTTP on SQLite and PostgreSQL: the state machine, create/get/list/release, idempotency,
dry-run, refusals (409) and quotas (403), tenant isolation, the static backend's result, gangs, capacity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from controller.leases.state import STATES, TRANSITIONS, IllegalTransition, check
from controller.store.models import AuditEntry, SliceClaim
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

GPU2 = {"slices": [{"kind": "gpu", "count": 2, "model": "H100"}]}


def fleet(controller: Controller, hosts: int = 2, gpus: int = 2) -> list[str]:
    names = [f"lh{i}" for i in range(hosts)]
    with controller.client() as anon:
        for name in names:
            credential = register(anon, controller.bootstrap_token, name)
            assert report(anon, credential, synthetic_inventory(name, gpus=gpus), 1).status_code == 200
    return names


def live_claims(controller: Controller) -> int:
    with controller.db.session() as session:
        return session.scalar(select(func.count()).select_from(SliceClaim).where(SliceClaim.released_at.is_(None))) or 0


def create(api: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return api.post("/v1/leases", json=body, headers={"Idempotency-Key": key} if key else {})


def test_state_machine_table_refuses_every_other_transition() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert ("requested", "placing") in allowed and ("ready", "releasing") in allowed
    assert {a for a, b in allowed if b == "failed"} == {"placing", "provisioning", "releasing"}
    for a in STATES:
        for b in STATES:
            if (a, b) in allowed:
                check(a, b)
            else:
                with pytest.raises(IllegalTransition, match=f"{a} -> {b} is not allowed"):
                    check(a, b)
    check(None, "requested")
    with pytest.raises(IllegalTransition):
        check(None, "ready")


def test_create_get_list_release(controller: Controller) -> None:
    hosts = fleet(controller)
    with controller.client(controller.tenant_token) as api:
        response = create(api, GPU2, "k-1")
        assert response.status_code == 201, response.text
        lease = response.json()
        assert response.headers["location"] == f"/v1/leases/{lease['id']}"
        assert lease["state"] == "ready" and lease["tenant"] == "acme" and lease["backend"] == "static"
        assert [(t["from_state"], t["to_state"]) for t in lease["transitions"]] == [
            (None, "requested"),
            ("requested", "placing"),
            ("placing", "provisioning"),
            ("provisioning", "ready"),
        ]
        host = lease["result"]["host"]
        assert host in hosts
        assert lease["result"]["cuda_visible_devices"] == f"GPU-{host}-0,GPU-{host}-1"
        node = lease["result"]["nodes"][0]
        assert node["devices"] == [f"GPU-{host}-0", f"GPU-{host}-1"] and node["mig_devices"] == []
        assert node["env"] == {"CUDA_VISIBLE_DEVICES": f"GPU-{host}-0,GPU-{host}-1"}
        assert [a["device"] for a in lease["allocations"]] == node["devices"]
        assert live_claims(controller) == 2

        shown = api.get(f"/v1/leases/{lease['id']}").json()
        assert shown["state"] == "ready" and len(shown["transitions"]) == 4
        assert [x["id"] for x in api.get("/v1/leases").json()] == [lease["id"]]
        assert api.get("/v1/leases", params={"state": "released"}).json() == []

        released = api.delete(f"/v1/leases/{lease['id']}")
        assert released.status_code == 200, released.text
        body = released.json()
        assert body["state"] == "released"
        assert [t["to_state"] for t in body["transitions"]][-2:] == ["releasing", "released"]
        assert live_claims(controller) == 0
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"  # idempotent
    with controller.db.session() as session:
        actions = [(e.action, e.result) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert ("lease.create", "ok") in actions and ("lease.release", "ok") in actions


def test_idempotency_key(controller: Controller) -> None:
    fleet(controller)
    with controller.client(controller.tenant_token) as api:
        first = create(api, GPU2, "same")
        again = create(api, GPU2, "same")
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert live_claims(controller) == 2
        other = create(api, {"slices": [{"kind": "gpu", "count": 1}]}, "same")
        problem = assert_problem(other, 422, "idempotency-key-reused")
        assert problem["lease"] == first.json()["id"]
        assert create(api, GPU2).status_code == 201  # no key: a new lease
        assert len(api.get("/v1/leases").json()) == 2


def test_dry_run_claims_nothing_and_refusals_explain(controller: Controller) -> None:
    fleet(controller)
    with controller.client(controller.tenant_token) as api:
        dry = api.post("/v1/placements:dry-run", json=GPU2)
        assert dry.status_code == 200, dry.text
        plan = dry.json()
        assert plan["fits"] is True and plan["claimed"] is False
        assert len(plan["nodes"]) == 1 and len(plan["nodes"][0]["allocations"]) == 2
        assert plan["candidates"]["hosts"] == 2
        assert live_claims(controller) == 0 and api.get("/v1/leases").json() == []

        too_big = create(api, {"slices": [{"kind": "gpu", "count": 3}]})
        problem = assert_problem(too_big, 409, "no-capacity")
        assert problem["nearest_fit"]["missing"] and "host" not in problem["nearest_fit"]  # tenants: no names
        assert {f["filter"] for f in problem["filters"]} >= {"fit"}
        wrong_model = assert_problem(create(api, {"slices": [{"kind": "gpu", "model": "A100"}]}), 409, "no-capacity")
        assert next(f for f in wrong_model["filters"] if f["filter"] == "model")["removed_devices"] == 4

        assert create(api, GPU2).status_code == 201
        assert create(api, GPU2).status_code == 201
        assert_problem(api.post("/v1/placements:dry-run", json=GPU2), 409, "no-capacity")
        capacity = assert_problem(create(api, {"slices": [{"kind": "gpu"}]}), 409, "no-capacity")
        assert next(f for f in capacity["filters"] if f["filter"] == "capacity")["removed_devices"] == 4
        bad = api.post("/v1/leases", json={"slices": [{"kind": "gpu", "profile": "3g.40gb"}]})
        assert "only valid with kind 'mig'" in assert_problem(bad, 422, "validation-error")["detail"]


def test_quota_is_403_naming_the_quota(controller: Controller) -> None:
    fleet(controller)
    with controller.admin() as admin:
        put = admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "model": "H100-80GB", "limit": 3}]})
        assert put.status_code == 200, put.text
    with controller.client(controller.tenant_token) as api:
        assert create(api, GPU2).status_code == 201
        problem = assert_problem(create(api, GPU2), 403, "quota-exceeded")
        assert problem["quota"].startswith("gpu:H100-80GB (limit 3, in use 2")
        assert create(api, {"slices": [{"kind": "gpu", "count": 1}]}).status_code == 201
        assert api.get("/v1/quotas/acme").status_code == 403  # admin only
    with controller.admin() as admin:
        quota = admin.get("/v1/quotas/acme").json()
        assert quota["limits"] == [{"kind": "gpu", "model": "H100-80GB", "limit": 3, "in_use": 3}]
        assert quota["usage"] == {"gpu:H100-80GB": 3}


def test_tenants_see_only_their_own_leases(controller: Controller) -> None:
    fleet(controller)
    with controller.admin() as admin:
        other = admin.post("/v1/tokens", json={"role": "tenant", "tenant": "globex", "name": "g"}).json()["token"]
    with controller.client(controller.tenant_token) as acme, controller.client(other) as globex:
        mine = create(acme, GPU2).json()
        theirs = create(globex, {"slices": [{"kind": "gpu"}]}).json()
        assert [x["id"] for x in acme.get("/v1/leases").json()] == [mine["id"]]
        assert [x["id"] for x in globex.get("/v1/leases").json()] == [theirs["id"]]
        assert_problem(globex.get(f"/v1/leases/{mine['id']}"), 404, "not-found")
        assert_problem(globex.delete(f"/v1/leases/{mine['id']}"), 404, "not-found")
        assert_problem(acme.post("/v1/leases", params={"tenant": "globex"}, json=GPU2), 403, "forbidden")
    with controller.admin() as admin:
        assert len(admin.get("/v1/leases").json()) == 2
        assert [x["id"] for x in admin.get("/v1/leases", params={"tenant": "globex"}).json()] == [theirs["id"]]
        assert admin.get(f"/v1/leases/{mine['id']}").json()["tenant"] == "acme"
        made = admin.post("/v1/leases", params={"tenant": "initech"}, json={"slices": [{"kind": "gpu"}]})
        assert made.status_code == 201 and made.json()["tenant"] == "initech"
        assert admin.delete(f"/v1/leases/{mine['id']}").json()["state"] == "released"


def test_gang_is_all_or_nothing_and_capacity_returns(controller: Controller) -> None:
    fleet(controller, hosts=3)
    with controller.client(controller.tenant_token) as api:
        gang = {"slices": [{"kind": "gpu", "count": 2}], "nodes": 4, "topology": "any"}
        problem = assert_problem(create(api, gang), 409, "no-capacity")
        assert "4 nodes" in problem["request"]
        assert live_claims(controller) == 0
        three = create(api, {**gang, "nodes": 3})
        assert three.status_code == 201, three.text
        assert len(three.json()["result"]["nodes"]) == 3 and "host" not in three.json()["result"]
        assert live_claims(controller) == 6
        assert_problem(create(api, {"slices": [{"kind": "gpu"}]}), 409, "no-capacity")
        assert api.delete(f"/v1/leases/{three.json()['id']}").json()["state"] == "released"
        assert live_claims(controller) == 0
        # Everything is back: the same gang fits again, and so does every single GPU one by one.
        ids = [create(api, {"slices": [{"kind": "gpu"}]}).json()["id"] for _ in range(6)]
        assert_problem(create(api, {"slices": [{"kind": "gpu"}]}), 409, "no-capacity")
        for lease_id in ids:
            api.delete(f"/v1/leases/{lease_id}")
        assert api.post("/v1/placements:dry-run", json={**gang, "nodes": 3}).status_code == 200
        assert live_claims(controller) == 0


def test_drain_removes_capacity_and_expiry_releases(controller: Controller) -> None:
    hosts = fleet(controller)
    with controller.admin() as admin:
        for host in hosts:
            assert admin.post(f"/v1/hosts/{host}/drain", json={"reason": "maintenance"}).status_code == 200
    with controller.client(controller.tenant_token) as api:
        problem = assert_problem(create(api, GPU2), 409, "no-capacity")
        assert next(f for f in problem["filters"] if f["filter"] == "host-state")["removed_hosts"] == 2
    with controller.admin() as admin:
        admin.post(f"/v1/hosts/{hosts[0]}/undrain")
        device = f"GPU-{hosts[0]}-1"
        assert admin.post(f"/v1/devices/{device}/quarantine").status_code == 200
    with controller.client(controller.tenant_token) as api:
        assert_problem(create(api, GPU2), 409, "no-capacity")
        lease = create(api, {"slices": [{"kind": "gpu"}], "duration": 60})
        assert lease.status_code == 201, lease.text
        assert lease.json()["allocations"][0]["device"] == f"GPU-{hosts[0]}-0"
        assert lease.json()["expires_at"]
        service = controller.server.app.state.leases
        assert service.expire(datetime.now(UTC)) == []
        assert service.expire(datetime.now(UTC) + timedelta(seconds=61)) == [lease.json()["id"]]
        expired = api.get(f"/v1/leases/{lease.json()['id']}").json()
        assert expired["state"] == "released" and expired["reason"].startswith("expired")
    assert live_claims(controller) == 0
