"""Keystone sign-in against a real Keystone (devservices/keystone.py): a project user's token is accepted and
mapped to its gpufabric tenant (and creates a lease for it), an admin's to the admin role; a revoked, garbage,
unscoped or unmapped token is refused with problem+json. Skips without the OpenStack services virtualenv and no
network to build it, and fails instead under GPUFABRIC_REQUIRE_OPENSTACK=1 (tests/support/openstack_services.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.store.db import Database
from devservices import keystone as ks
from devservices.openstack import Service
from tests.controller.test_leases import fleet
from tests.support.controller import Controller, running_controller
from tests.support.helpers import assert_problem

pytestmark = pytest.mark.integration

MAPPING = """
keystone:
  - {project: admin, keystone_role: admin, role: admin}
  - {project: "acme-*", keystone_role: member, role: tenant, tenant: acme}
  - {project: "*", keystone_role: member, role: tenant, tenant: "{project}"}
"""


@pytest.fixture
def fabric(migrated_db: Database, database_url: str, tmp_path: Path, keystone_service: Service) -> Iterator[Controller]:
    mapping = tmp_path / "identity.yaml"
    mapping.write_text(MAPPING)
    with running_controller(
        migrated_db,
        database_url,
        tmp_path,
        keystone_url=keystone_service.url,
        keystone_token_cache_s=0,  # every request asks Keystone: a revocation shows at once
        identity_mapping_file=mapping,
    ) as ctl:
        yield ctl


def _user(url: str, project: str, role: str = "member") -> str:
    """A new user with ``role`` on ``project`` (made if missing); returns a token scoped to that project."""
    name, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    ks.seed_user(url, project, name, password, role)
    return ks.password_token(url, name, password, project)


def test_a_project_users_token_is_its_tenant_and_creates_a_lease(fabric: Controller, keystone_service: Service) -> None:
    fleet(fabric, hosts=1)
    token = _user(keystone_service.url, "acme-prod")
    with fabric.client(token) as api:
        me = api.get("/v1/whoami")
        assert me.status_code == 200, me.text
        assert me.json()["role"] == "tenant" and me.json()["tenant"] == "acme"
        assert me.json()["name"].startswith("keystone:u-") and me.json()["name"].endswith("@acme-prod")
        made = api.post("/v1/leases", json={"slices": [{"kind": "gpu"}]})
        assert made.status_code == 201, made.text
        assert made.json()["tenant"] == "acme" and made.json()["created_by"].startswith("tenant:acme:keystone:")
        assert_problem(api.get("/v1/hosts"), 403, "forbidden")
    other = _user(keystone_service.url, "initech")  # the catch-all rule: the project's name is the tenant
    with fabric.client(other) as api:
        assert api.get("/v1/whoami").json()["tenant"] == "initech"
        assert api.get("/v1/leases").json() == []  # not acme's leases
    with fabric.client(ks.admin_token(keystone_service.url)) as admin:
        assert admin.get("/v1/whoami").json()["role"] == "admin"
        assert admin.get("/v1/hosts").status_code == 200


def test_revoked_garbage_unscoped_and_unmapped_tokens_are_refused(
    fabric: Controller, keystone_service: Service
) -> None:
    url = keystone_service.url
    token = _user(url, "acme-lab")
    with fabric.client(token) as api:
        assert api.get("/v1/whoami").status_code == 200
    assert ks.revoke(url, token) == 204
    with fabric.client(token) as api:
        problem = assert_problem(api.get("/v1/whoami"), 401, "unauthorized")
    assert "Keystone does not accept the token" in problem["detail"]
    for garbage in ("gAAAAABnot-a-fernet-token", "x" * 300):
        with fabric.client(garbage) as api:
            assert_problem(api.get("/v1/whoami"), 401, "unauthorized")
    name, password = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    ks.seed_user(url, "acme-lab", name, password)
    unscoped = ks.password_token(url, name, password, None)
    with fabric.client(unscoped) as api:
        assert "not scoped to a project" in assert_problem(api.get("/v1/whoami"), 401, "unauthorized")["detail"]
    reader = _user(url, "acme-lab", role="reader")  # genuine, but no rule gives a reader anything
    with fabric.client(reader) as api:
        assert "matches no rule" in assert_problem(api.get("/v1/whoami"), 403, "forbidden")["detail"]
    with fabric.client(fabric.tenant_token) as api:  # gpufabric's own tokens are unchanged
        assert api.get("/v1/whoami").json()["tenant"] == "acme"


def test_a_keystone_token_signs_in_to_the_dashboard_until_it_is_revoked(
    fabric: Controller, keystone_service: Service
) -> None:
    """The dashboard's sign-in takes the same tokens as the API: a project member's Keystone token opens a tenant
    session (the same HttpOnly, SameSite=Strict cookie), and revoking the token in Keystone ends it."""
    url = keystone_service.url
    token = _user(url, "acme-ui")
    with httpx.Client(base_url=fabric.url, timeout=30, follow_redirects=False) as ui:
        form = ui.get("/ui/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce, form.text
        signed = ui.post("/ui/signin", data={"csrf": nonce.group(1), "token": token, "next": ""})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/leases", signed.text
        assert "HttpOnly" in signed.headers["set-cookie"] and "SameSite=strict" in signed.headers["set-cookie"]
        assert ui.get("/ui/leases").status_code == 200
        assert ks.revoke(url, token) == 204
        ended = ui.get("/ui/leases")  # keystone_token_cache_s=0: the next page asks Keystone again
        assert ended.status_code == 303 and ended.headers["location"].startswith("/ui/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', ui.get("/ui/signin").text)
        assert nonce
        again = ui.post("/ui/signin", data={"csrf": nonce.group(1), "token": token, "next": ""})
        assert again.status_code == 401 and "Keystone does not accept the token" in again.text
