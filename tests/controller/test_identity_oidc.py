"""OIDC sign-in against a key set this test serves over HTTP itself: a valid token is mapped to its tenant (and
creates a lease for it), a wrong audience or issuer, an expired token, an unknown key id, a bad signature or an
unaccepted algorithm are 401 problem+json, an unmapped identity 403, and a rotated key set is fetched again."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from controller.api.app import create_app
from controller.store.db import Database
from tests.controller.test_leases import fleet
from tests.support.controller import Controller, make_settings, running_controller
from tests.support.helpers import assert_problem

ISSUER = "https://idp.test/realms/gpu"
AUDIENCE = "gpufabric"
MAPPING = """
oidc:
  - {claim: groups, value: gpu-admins, role: admin}
  - {claim: groups, value: "gpu-acme*", role: tenant, tenant: acme}
  - {claim: gpufabric_tenant, value: "*", role: tenant, tenant: "{value}"}
"""


@dataclass
class KeyServer:
    """A JWKS endpoint: ``keys`` are the published (kid -> private key); ``hits`` counts fetches."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    hits: int = 0
    url: str = ""

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def document(self) -> dict[str, Any]:
        jwks = []
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwks.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": jwks}


@pytest.fixture
def idp() -> Iterator[KeyServer]:
    with key_server() as server:
        yield server


@contextmanager
def key_server() -> Iterator[KeyServer]:
    """A key set with key ``k1``, served over HTTP until the block ends (also used by the dashboard's tests)."""
    server_state = KeyServer()
    server_state.add("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.hits += 1
            body = json.dumps(server_state.document()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/protocol/openid-connect/certs"
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fabric(migrated_db: Database, database_url: str, tmp_path: Path, idp: KeyServer) -> Iterator[Controller]:
    mapping = tmp_path / "identity.yaml"
    mapping.write_text(MAPPING)
    with running_controller(
        migrated_db,
        database_url,
        tmp_path,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=idp.url,
        oidc_jwks_min_refresh_s=0,
        identity_mapping_file=mapping,
    ) as ctl:
        yield ctl


def token(idp: KeyServer, kid: str = "k1", *, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "preferred_username": "ada",
        "iat": now,
        "exp": now + 300,
        "groups": ["gpu-acme"],
        **claims,
    }
    return jwt.encode(body, key or idp.keys[kid], algorithm="RS256", headers={"kid": kid})


def test_a_valid_token_is_its_mapped_tenant_and_creates_a_lease(fabric: Controller, idp: KeyServer) -> None:
    fleet(fabric, hosts=1)
    with fabric.client(token(idp)) as api:
        me = api.get("/v1/whoami")
        assert me.status_code == 200, me.text
        assert me.json() == {"role": "tenant", "name": "oidc:ada", "tenant": "acme", "host": None}
        made = api.post("/v1/leases", json={"slices": [{"kind": "gpu"}]})
        assert made.status_code == 201, made.text
        assert made.json()["tenant"] == "acme" and made.json()["created_by"] == "tenant:acme:oidc:ada"
        assert_problem(api.get("/v1/hosts"), 403, "forbidden")  # a tenant, not an admin
    with fabric.client(token(idp, groups=["staff", "gpu-admins"])) as admin:
        assert admin.get("/v1/whoami").json()["role"] == "admin"
        assert admin.get("/v1/hosts").status_code == 200
    with fabric.client(token(idp, groups=[], gpufabric_tenant="initech")) as other:
        assert other.get("/v1/whoami").json()["tenant"] == "initech"
    # gpufabric's own tokens keep working next to OIDC.
    with fabric.client(fabric.admin_token) as admin:
        assert admin.get("/v1/whoami").json()["role"] == "admin"


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.test"}, "not issued by"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": None}, "exp"),
    ],
)
def test_bad_claims_are_401(fabric: Controller, idp: KeyServer, claims: dict[str, Any], why: str) -> None:
    with fabric.client(token(idp, **claims)) as api:
        problem = assert_problem(api.get("/v1/whoami"), 401, "unauthorized")
    assert why in problem["detail"], problem


def test_unknown_keys_bad_signatures_and_algorithms_are_401(fabric: Controller, idp: KeyServer) -> None:
    outsider = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with fabric.client(token(idp, "k9", key=outsider)) as api:
        assert "no key 'k9'" in assert_problem(api.get("/v1/whoami"), 401, "unauthorized")["detail"]
    with fabric.client(token(idp, "k1", key=outsider)) as api:  # the known kid, signed by another key
        assert "signature" in assert_problem(api.get("/v1/whoami"), 401, "unauthorized")["detail"]
    good = token(idp)
    head, _payload, signature = good.split(".")
    tampered = jwt.utils.base64url_encode(
        json.dumps({**jwt.decode(good, options={"verify_signature": False}), "groups": ["gpu-admins"]}).encode()
    ).decode()
    with fabric.client(f"{head}.{tampered}.{signature}") as api:
        assert_problem(api.get("/v1/whoami"), 401, "unauthorized")
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, None, algorithm="none", headers={"kid": "k1"}
    )
    hmac = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
        "k" * 32,
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    for forged in (unsigned, hmac):
        with fabric.client(forged) as api:
            assert "not accepted" in assert_problem(api.get("/v1/whoami"), 401, "unauthorized")["detail"]
    with fabric.client("eyJhbGciOi.garbage.x") as api:
        assert_problem(api.get("/v1/whoami"), 401, "unauthorized")
    with fabric.client(token(idp, groups=["nobody"])) as api:
        assert "matches no rule" in assert_problem(api.get("/v1/whoami"), 403, "forbidden")["detail"]


def test_a_rotated_key_set_is_fetched_again(fabric: Controller, idp: KeyServer) -> None:
    with fabric.client(token(idp)) as api:
        assert api.get("/v1/whoami").status_code == 200
    fetched = idp.hits
    assert fetched >= 1
    with fabric.client(token(idp)) as api:
        assert api.get("/v1/leases").status_code == 200
    assert idp.hits == fetched, "a known key is served from the cache"
    # The provider rotates: k2 is published, k1 withdrawn. A k2 token makes the controller fetch the set again.
    idp.add("k2")
    old = idp.keys.pop("k1")
    with fabric.client(token(idp, "k2")) as api:
        assert api.get("/v1/whoami").json()["tenant"] == "acme"
    assert idp.hits == fetched + 1
    with fabric.client(token(idp, "k1", key=old)) as api:  # signed by the withdrawn key
        assert "no key 'k1'" in assert_problem(api.get("/v1/whoami"), 401, "unauthorized")["detail"]


def test_half_configured_sign_in_and_bad_mappings_are_refused_at_start(
    migrated_db: Database, database_url: str, tmp_path: Path, idp: KeyServer
) -> None:
    oidc = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": idp.url}
    with pytest.raises(ValueError, match="identity_mapping_file"):
        create_app(make_settings(database_url, tmp_path, **oidc), db=migrated_db)
    with pytest.raises(ValueError, match="oidc_audience"):
        create_app(make_settings(database_url, tmp_path, oidc_issuer=ISSUER), db=migrated_db)
    bad = tmp_path / "bad.yaml"
    for text, why in (
        ("oidc:\n  - {claim: groups, value: x, role: tenant}\n", "must name the tenant"),
        ("oidc:\n  - {claim: groups, value: x, role: agent}\n", "role"),
        ("keystone:\n  - {project: p, keystone_role: member, role: admin, tenant: t}\n", "names no tenant"),
        ("oidc: [\n", "identity mapping"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=why):
            create_app(make_settings(database_url, tmp_path, identity_mapping_file=bad, **oidc), db=migrated_db)
