"""Hostile input, as issue 13 tried it, on SQLite and PostgreSQL: every case is a 4xx problem+json (never a 500,
never a closed connection) and leaves the store as it was."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from controller.store.models import ApiToken, AuditEntry, Backend, Lease, Pool, Quota, SliceClaim
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

GPU1 = {"kind": "gpu", "count": 1, "model": "H100"}
HUGE_OFFSET = "9223372036854775808"  # 2**63: past BIGINT and SQLite's integers


def fleet(controller: Controller) -> None:
    with controller.client() as anon:
        credential = register(anon, controller.bootstrap_token, "hostile-a")
        assert report(anon, credential, synthetic_inventory("hostile-a", gpus=2), 1).status_code == 200


def store_state(controller: Controller) -> dict[str, list[Any]]:
    """What a refused request must not change (the audit log may gain a `failed` row; tokens their last use)."""
    with controller.db.session() as session:
        return {
            "leases": [(r.id, r.tenant, r.state, r.expires_at) for r in session.scalars(select(Lease))],
            "claims": [(r.lease_id, r.resource, r.slot, r.released_at) for r in session.scalars(select(SliceClaim))],
            "quotas": [(r.tenant, r.kind, r.model, r.limit) for r in session.scalars(select(Quota))],
            "tokens": [(r.key_id, r.name, r.role, r.tenant) for r in session.scalars(select(ApiToken))],
            "pools": [(r.name, r.description) for r in session.scalars(select(Pool))],
            "backends": [(r.name, r.kind) for r in session.scalars(select(Backend))],
        }


def refused(response: httpx.Response, status: int, slug: str, *mentions: str) -> dict[str, Any]:
    body = assert_problem(response, status, slug)
    text = json.dumps(body)
    for word in mentions:
        assert word in text, (word, body)
    return body


@pytest.fixture
def hostile(controller: Controller) -> Controller:
    fleet(controller)
    with controller.admin() as admin:
        assert admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "limit": 8}]}).status_code == 200
    return controller


def post_raw(api: httpx.Client, path: str, text: str) -> httpx.Response:
    return api.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "memory",
    ["1e308", "Infinity", "-Infinity", "NaN", "1e400", "100000"],
)
def test_min_memory_gib_must_be_finite_and_plausible(hostile: Controller, memory: str) -> None:
    before = store_state(hostile)
    body = '{"slices": [{"kind": "gpu", "count": 1, "model": "H100", "min_memory_gib": MEMORY}]}'.replace(
        "MEMORY", memory
    )
    with hostile.client(hostile.tenant_token) as api:
        for path in ("/v1/leases", "/v1/placements:dry-run"):
            refused(post_raw(api, path, body), 422, "validation-error", "min_memory_gib")
    assert store_state(hostile) == before


def test_duration_is_bounded_by_the_configured_maximum(hostile: Controller) -> None:
    before = store_state(hostile)
    longest = hostile.settings.max_lease_duration_s
    with hostile.client(hostile.tenant_token) as api:
        for duration in ("P999999999D", f"PT{longest + 1}S", longest + 1):
            response = api.post("/v1/leases", json={"slices": [GPU1], "duration": duration})
            body = refused(response, 422, "validation-error", "duration", str(longest), "max_lease_duration_s")
            assert body["errors"][0]["loc"] == ["body", "duration"]
        assert store_state(hostile) == before
        ok = api.post("/v1/leases", json={"slices": [GPU1], "duration": longest})
        assert ok.status_code == 201, ok.text
        assert ok.json()["expires_at"] is not None


@pytest.mark.parametrize("path", ["/v1/leases", "/v1/hosts", "/v1/devices"])
def test_offset_past_bigint_is_refused_on_every_list(hostile: Controller, path: str) -> None:
    with hostile.admin() as admin:
        refused(admin.get(path, params={"offset": HUGE_OFFSET}), 422, "validation-error", "offset")
        assert admin.get(path, params={"offset": "10000000"}).status_code == 200
    with hostile.client(hostile.tenant_token) as api:
        if path == "/v1/leases":
            refused(api.get(path, params={"offset": HUGE_OFFSET}), 422, "validation-error", "offset")


def test_nul_byte_in_a_lease_id_or_query_is_refused(hostile: Controller) -> None:
    with hostile.client(hostile.tenant_token) as api:
        created = api.post("/v1/leases", json={"slices": [GPU1]})
        assert created.status_code == 201, created.text
        lease_id = created.json()["id"]
        before = store_state(hostile)
        for method in ("GET", "DELETE"):
            refused(api.request(method, f"/v1/leases/{lease_id}%00"), 422, "validation-error", "NUL")
        refused(api.get("/v1/leases", params={"state": "ready\x00"}), 422, "validation-error", "NUL")
        refused(
            api.post("/v1/leases", json={"slices": [{**GPU1, "model": "H100\x00"}]}), 422, "validation-error", "model"
        )
        assert store_state(hostile) == before
        assert api.get(f"/v1/leases/{lease_id}").json()["state"] == "ready"
    with hostile.admin() as admin:  # found by schemathesis: a 500 on PostgreSQL before
        refused(admin.post("/v1/hosts/hostile-a/tasks", json={"kind": "\x00"}), 422, "validation-error", "kind")
        assert admin.get("/v1/hosts/hostile-a/tasks").json() == []


def test_quota_limit_must_fit_its_column(hostile: Controller) -> None:
    before = store_state(hostile)
    with hostile.admin() as admin:
        for limit in (10**20, 2**31, -1, True, 1.5, "3"):
            response = admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "limit": limit}]})
            refused(response, 422, "validation-error", "limit")
        assert admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "limit": 2**31 - 1}]}).status_code == 200
    with hostile.db.session() as session:
        assert session.scalar(select(Quota.limit).where(Quota.tenant == "acme")) == 2**31 - 1
    assert {k: v for k, v in store_state(hostile).items() if k != "quotas"} == {
        k: v for k, v in before.items() if k != "quotas"
    }


def test_names_longer_than_their_columns_are_refused_not_stored(hostile: Controller) -> None:
    long_tenant = "t" * 129
    long_model = "H100-" + "x" * 124  # 129 characters
    before = store_state(hostile)
    with hostile.admin() as admin:
        refused(admin.put(f"/v1/quotas/{long_tenant}", json={"limits": []}), 422, "validation-error", "tenant")
        refused(
            admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "model": long_model, "limit": 1}]}),
            422,
            "validation-error",
            "model",
        )
        refused(
            admin.post("/v1/leases", params={"tenant": long_tenant}, json={"slices": [GPU1]}),
            422,
            "validation-error",
            "tenant",
        )
        refused(
            admin.post("/v1/tokens", json={"role": "tenant", "tenant": long_tenant}), 422, "validation-error", "tenant"
        )
        refused(admin.post("/v1/tokens", json={"role": "admin", "name": "n" * 129}), 422, "validation-error", "name")
    with hostile.client(hostile.tenant_token) as api:
        refused(
            api.post("/v1/leases", json={"slices": [{**GPU1, "model": long_model}]}), 422, "validation-error", "model"
        )
        refused(api.post("/v1/leases", json={"slices": [GPU1], "backends": ["b" * 129]}), 422, "validation-error")
    assert store_state(hostile) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": True}, "count"),
        ({"count": 1.0}, "count"),
        ({"count": "1"}, "count"),
        ({"nodes": True}, "nodes"),
        ({"require_validated": 1}, "require_validated"),
        ({"require_validated": "yes"}, "require_validated"),
    ],
)
def test_booleans_and_integers_are_strict(hostile: Controller, change: dict[str, Any], field: str) -> None:
    slice_fields = {"count"}
    body: dict[str, Any] = {"slices": [GPU1]}
    if field in slice_fields:
        body["slices"] = [{**GPU1, **change}]
    else:
        body.update(change)
    before = store_state(hostile)
    with hostile.client(hostile.tenant_token) as api:
        refused(api.post("/v1/leases", json=body), 422, "validation-error", field)
    assert store_state(hostile) == before


def test_oversized_bodies_are_refused_and_audit_rows_stay_small(hostile: Controller) -> None:
    before = store_state(hostile)
    with hostile.client(hostile.tenant_token) as api:
        huge = {"slices": [{**GPU1, "model": "H" * (10 * 1024 * 1024)}]}
        refused(api.post("/v1/leases", json=huge), 413, "payload-too-large")
        # Under the body limit: refused by the model, and whatever is audited is an excerpt.
        big = {"slices": [{**GPU1, "model": "H" * (900 * 1024)}]}
        refused(api.post("/v1/leases", json=big), 422, "validation-error", "model")
        # A request refused by placement is audited with its description: bounded too.
        far = {"slices": [{**GPU1, "model": "B200"}], "azs": ["z" * 128] * 64}
        refused(api.post("/v1/leases", json=far), 409, "no-capacity")
    with hostile.admin() as admin:
        # An audited admin mutation whose detail is every limit sent: 100 limits of 128-character models.
        limits = [{"kind": "gpu", "model": f"{i:03d}" + "m" * 125, "limit": 1} for i in range(100)]
        assert admin.put("/v1/quotas/other", json={"limits": limits}).status_code == 200
        reason = "r" * 4097
        refused(admin.post("/v1/hosts/hostile-a/drain", json={"reason": reason}), 422, "validation-error", "reason")
    assert store_state(hostile)["leases"] == before["leases"]
    with hostile.db.session() as session:
        rows = list(session.scalars(select(AuditEntry)))
    assert any(r.action == "quota.set" and r.target == "other" for r in rows)
    for row in rows:
        assert len(json.dumps(row.detail)) <= 9 * 1024, (row.action, len(json.dumps(row.detail)))


def test_request_bodies_must_be_json(hostile: Controller) -> None:
    before = store_state(hostile)
    with hostile.client(hostile.tenant_token) as api:
        response = api.post(
            "/v1/leases", content=json.dumps({"slices": [GPU1]}), headers={"Content-Type": "text/plain"}
        )
        refused(response, 415, "unsupported-media-type", "text/plain")
    assert store_state(hostile) == before


def test_a_nul_escape_anywhere_in_a_body_is_refused_before_any_handler(hostile: Controller) -> None:
    """Schemathesis found POST /v1/validations with a NUL in a host name reaching PostgreSQL (500). Free-form
    documents (labels, backend configs, desired state, validation targets) hold strings no model bounds: the body
    is checked as a whole. An escaped backslash followed by ``u0000`` is text and passes."""
    before = store_state(hostile)
    with hostile.admin() as admin:
        for path, text in (
            ("/v1/validations", '{"hosts": ["lh0", "x\\u0000y"]}'),
            ("/v1/backends", '{"name": "b1", "kind": "static", "config": {"note": "a\\u0000"}}'),
            ("/v1/pools", '{"name": "p1", "policy": {"labels": {"k": "\\u0000"}}}'),
            ("/v1/leases", '{"slices": [{"kind": "gpu", "count": 1}], "labels": {"x": "\\\\\\u0000"}}'),
        ):
            refused(post_raw(admin, path, text), 422, "validation-error", "NUL")
        with hostile.client() as anon:
            refused(post_raw(anon, "/v1/agents/register", '{"hostname": "h\\u0000"}'), 422, "validation-error")
        located = refused(
            post_raw(admin, "/v1/validations", '{"hosts": ["lh0", "x\\u0000y"]}'), 422, "validation-error"
        )
        assert located["errors"][0]["loc"] == ["body", "hosts", 1] and located["detail"].startswith("body.hosts.1:")
        # Text that only looks like the escape is stored as given.
        made = post_raw(admin, "/v1/backends", '{"name": "b2", "kind": "static", "config": {"note": "C:\\\\u0000"}}')
        assert made.status_code == 201, made.text
        assert admin.get("/v1/backends/b2").json()["config"]["note"] == "C:\\u0000"
    after = store_state(hostile)
    assert after["backends"] == [*before["backends"], ("b2", "static")]
    assert {k: v for k, v in after.items() if k != "backends"} == {k: v for k, v in before.items() if k != "backends"}


def test_openapi_types_the_lease_request_and_lists_problem_responses(hostile: Controller) -> None:
    with hostile.client() as anon:
        doc = anon.get("/openapi.json").json()
    create = doc["paths"]["/v1/leases"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["$ref"] == "#/components/schemas/PlacementRequest"
    slice_schema = doc["components"]["schemas"]["SliceRequest"]["properties"]
    assert slice_schema["model"]["anyOf"][0]["maxLength"] == 128
    for status in ("200", "201", "400", "401", "403", "409", "413", "415", "422", "500"):
        assert status in create["responses"], status
    assert set(create["responses"]["422"]["content"]) == {"application/problem+json"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    listing = doc["paths"]["/v1/leases"]["get"]["parameters"]
    offset = next(p for p in listing if p["name"] == "offset")
    assert offset["schema"]["maximum"] == 10_000_000
