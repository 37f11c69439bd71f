"""Every route in the OpenAPI schema, called with every role: a role that is not allowed gets
401/403 problem+json, never data."""

from __future__ import annotations

import re

import pytest

from controller.api.app import api_routes
from controller.api.deps import declared_roles
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register

UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}


def _fill(path: str, host: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: host if m.group(1) == "host" else "x", path)


def test_every_route_declares_roles(controller: Controller) -> None:
    schema = controller.server.app.openapi()
    routes = api_routes()
    assert len(routes) >= 25
    for route in routes:
        if route.path not in UNAUTHENTICATED:
            assert declared_roles(route), f"{route.path} declares no role"
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if path not in UNAUTHENTICATED:
                assert op["x-gpufabric-roles"], f"{method} {path}"


def test_roles_cannot_reach_each_others_routes(controller: Controller) -> None:
    schema = controller.server.app.openapi()
    with controller.client() as anon:
        agent_credential = register(anon, controller.bootstrap_token, "roles-host")
        other_credential = register(anon, controller.bootstrap_token, "other-host")
    tokens = {  # admin last: its DELETE of roles-host would revoke the agent credential
        None: None,
        "tenant": controller.tenant_token,
        "agent": agent_credential,
        "agent-bootstrap": controller.bootstrap_token,
        "admin": controller.admin_token,
    }
    checked = 0
    # DELETEs and credential resets last: an admin deleting roles-host or resetting its credential would revoke
    # the agent credential under test.
    operations = sorted(
        ((path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()),
        key=lambda item: (
            0
            if item[1] != "delete" and not item[0].endswith("/credential:reset")
            else 1
            if "{host}" not in item[0]
            else 2
            if item[0].endswith("/credential:reset")
            else 3
        ),
    )
    walked: set[tuple[str, str]] = set()
    for path, method, op in operations:
        if path in UNAUTHENTICATED:
            continue
        url = _fill(path, "roles-host")
        walked.add((method, path))
        for _ in (0,):
            allowed = set(op["x-gpufabric-roles"])
            for role, token in tokens.items():
                with controller.client(token) as client:
                    response = client.request(method.upper(), url, json={})
                if role is None:
                    assert_problem(response, 401, "unauthorized")
                elif role not in allowed:
                    assert_problem(response, 403, "forbidden")
                else:
                    assert response.status_code not in (401, 403), (method, url, role, response.text)
                checked += 1
            if "agent" in allowed and "{host}" in path and method != "delete":
                # An agent credential is valid for its own host only.
                with controller.client(other_credential) as client:
                    response = client.request(method.upper(), url, json={})
                assert_problem(response, 403, "forbidden")
        if path.endswith("/credential:reset"):
            # The admin's reset revoked the agent credential; the host is open to one bootstrap registration.
            with controller.client() as anon:
                tokens["agent"] = register(anon, controller.bootstrap_token, "roles-host")
    assert checked > 100
    # The tenant surface (leases, dry-run) and the admin quota routes are walked with every role too.
    for method, path in [
        ("post", "/v1/leases"),
        ("get", "/v1/leases"),
        ("get", "/v1/leases/{lease_id}"),
        ("delete", "/v1/leases/{lease_id}"),
        ("post", "/v1/placements:dry-run"),
        ("get", "/v1/quotas"),
        ("get", "/v1/quotas/{tenant}"),
        ("put", "/v1/quotas/{tenant}"),
    ]:
        assert (method, path) in walked, (method, path)


@pytest.mark.parametrize("token", ["", "Bearer", "Bearer nonsense", "Bearer gft_abc_def", "Basic Zm9vOmJhcg=="])
def test_bad_tokens_are_401(controller: Controller, token: str) -> None:
    with controller.client() as client:
        response = client.get("/v1/hosts", headers={"Authorization": token} if token else {})
    assert_problem(response, 401, "unauthorized")
    assert response.headers.get("www-authenticate") == "Bearer"


def test_revoked_token_is_401(controller: Controller) -> None:
    with controller.admin() as api:
        created = api.post("/v1/tokens", json={"role": "tenant", "tenant": "t1", "name": "short-lived"}).json()
        assert api.delete(f"/v1/tokens/{created['key_id']}").status_code == 204
        listed = {t["key_id"]: t for t in api.get("/v1/tokens").json()}
        assert "token" not in listed[created["key_id"]]
    with controller.client(created["token"]) as client:
        assert_problem(client.get("/v1/whoami"), 401, "unauthorized")
