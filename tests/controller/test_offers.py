"""The tenant catalog over HTTP: ``GET /v1/offers`` (counts per backend and region, quota room, no host names),
``GET /v1/quotas/me``, and refusals and dry runs shown to tenants without other hosts' names while admins keep the
full detail. Devices, hosts and pools stay admin-only."""

from __future__ import annotations

from controller.auth.tokens import Role, create_api_token
from tests.controller.test_leases import create, fleet
from tests.support.controller import Controller
from tests.support.helpers import assert_problem

HOSTS = ("lh0", "lh1", "lh2")


def _no_host_names(text: str) -> None:
    for name in HOSTS:
        assert name not in text, (name, text)
    assert "GPU-" not in text, text


def test_offers_count_free_units_without_naming_hosts(controller: Controller) -> None:
    fleet(controller, hosts=3, gpus=2)
    with controller.client(controller.tenant_token) as api:
        offered = api.get("/v1/offers")
        assert offered.status_code == 200, offered.text
        _no_host_names(offered.text)
        body = offered.json()
        assert body["tenant"] == "acme" and body["quotas"] == []
        [gpu] = body["offers"]
        assert (gpu["kind"], gpu["model"], gpu["backend_kind"]) == ("gpu", "H100-80GB", "static")
        assert (gpu["free"], gpu["hosts"], gpu["max_per_host"]) == (6, 3, 2)
        assert gpu["quota_left"] is None and gpu["requestable"] == 6
        assert gpu["profile"] is None and gpu["on_demand"] is False

        assert create(api, {"slices": [{"kind": "gpu", "count": 2}]}).status_code == 201
        gpu = api.get("/v1/offers").json()["offers"][0]
        assert (gpu["free"], gpu["hosts"], gpu["max_per_host"]) == (4, 2, 2)
        assert api.get("/v1/offers", params={"kind": "mig"}).json()["offers"] == []
        assert len(api.get("/v1/offers", params={"model": "h100"}).json()["offers"]) == 1
        assert_problem(api.get("/v1/offers", params={"kind": "tpu"}), 422, "validation-error")


def test_quota_room_and_my_quota(controller: Controller) -> None:
    fleet(controller, hosts=2, gpus=2)
    with controller.admin() as admin:
        limits = {"limits": [{"kind": "gpu", "model": "*", "limit": 3}, {"kind": "mig", "limit": 5}]}
        assert admin.put("/v1/quotas/acme", json=limits).status_code == 200
    with controller.client(controller.tenant_token) as api:
        assert create(api, {"slices": [{"kind": "gpu", "count": 2}]}).status_code == 201
        gpu = api.get("/v1/offers").json()["offers"][0]
        assert (gpu["free"], gpu["quota_left"], gpu["requestable"]) == (2, 1, 1)
        mine = api.get("/v1/quotas/me")
        assert mine.status_code == 200, mine.text
        me = mine.json()
        assert me["tenant"] == "acme" and me["usage"] == {"gpu:H100-80GB": 2}
        assert {(q["kind"], q["model"], q["limit"], q["in_use"]) for q in me["limits"]} == {
            ("gpu", "*", 3, 2),
            ("mig", "*", 5, 0),
        }
        # Other tenants' quotas, devices, hosts and pools stay the admins'.
        for path in ("/v1/quotas/acme", "/v1/quotas", "/v1/devices", "/v1/hosts", "/v1/pools"):
            assert_problem(api.get(path), 403, "forbidden")


def test_admins_and_other_tenants(controller: Controller) -> None:
    fleet(controller, hosts=1, gpus=2)
    with controller.db.session() as session:
        _, globex = create_api_token(session, role=Role.tenant, name="g", tenant="globex")
    with controller.admin() as admin, controller.client(globex) as other:
        assert_problem(admin.get("/v1/offers"), 422, "validation-error")  # an admin names the tenant
        assert admin.get("/v1/offers", params={"tenant": "acme"}).json()["tenant"] == "acme"
        assert_problem(other.get("/v1/offers", params={"tenant": "acme"}), 403, "forbidden")
        assert other.get("/v1/quotas/me").json()["tenant"] == "globex"
        # For an admin, /v1/quotas/me stays the quota of the tenant named "me".
        assert admin.put("/v1/quotas/me", json={"limits": [{"kind": "gpu", "limit": 1}]}).status_code == 200
        assert admin.get("/v1/quotas/me").json()["tenant"] == "me"
        assert [q["limit"] for q in admin.get("/v1/quotas/me").json()["limits"]] == [1]


def test_refusals_and_dry_runs_are_redacted_for_tenants_only(controller: Controller) -> None:
    fleet(controller, hosts=2, gpus=2)
    with controller.admin() as admin:
        assert admin.post("/v1/hosts/lh1/drain").status_code == 200
    too_big = {"slices": [{"kind": "gpu", "count": 2}], "nodes": 2}
    with controller.client(controller.tenant_token) as api, controller.admin() as admin:
        assert create(api, {"slices": [{"kind": "gpu", "count": 1}]}).status_code == 201  # busy: lh0 GPU x

        mine = assert_problem(create(api, too_big), 409, "no-capacity")
        _no_host_names(str(mine))
        by_filter = {f["filter"]: f for f in mine["filters"]}
        assert by_filter["host-state"] == {
            "filter": "host-state",
            "removed_hosts": 1,
            "removed_devices": 2,
            "reasons": ["host is drained"],
        }
        assert "host" not in mine["nearest_fit"] and mine["candidates"] == {"hosts": 2, "devices": 4}

        theirs = assert_problem(admin.post("/v1/leases", params={"tenant": "acme"}, json=too_big), 409, "no-capacity")
        assert any("lh1" in e for f in theirs["filters"] for e in f["examples"]), theirs
        assert theirs["nearest_fit"]["host"] in HOSTS

        plan = api.post("/v1/placements:dry-run", json={"slices": [{"kind": "gpu"}]})
        assert plan.status_code == 200, plan.text
        _no_host_names(plan.text)
        assert plan.json()["nodes"][0]["allocations"] == [{"kind": "gpu", "model": "H100-80GB", "units": 1}]
        full = admin.post("/v1/placements:dry-run", json={"slices": [{"kind": "gpu"}]}).json()
        assert full["nodes"][0]["host"] == "lh0" and full["nodes"][0]["allocations"][0]["device"].startswith("GPU-")
        dry_refused = assert_problem(api.post("/v1/placements:dry-run", json=too_big), 409, "no-capacity")
        _no_host_names(str(dry_refused))
