"""The dashboard through HTTP, against a real controller and simulated agents: sign-in and its cookie, CSRF,
tenant isolation, admin-only pages, and GPU drawings that match what the API reports."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from controller.auth.tokens import Role, create_api_token
from controller.store.db import Database
from controller.ui import fleet_data
from drivers.contract.inventory import HealthReason, VgpuInfo, VgpuType
from tests.controller import test_identity_oidc as oidc
from tests.controller.test_identity_oidc import KeyServer
from tests.support.controller import Controller, running_controller
from tests.support.helpers import register, report, synthetic_inventory
from tests.support.ui_fleet import L4_HOST, MIG_HOST, build_fleet

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(controller: Controller) -> httpx.Client:
    return httpx.Client(base_url=controller.url, timeout=30, follow_redirects=False)


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/ui/signin")
    nonce = CSRF.search(form.text)
    assert nonce, form.text
    return client.post("/ui/signin", data={"csrf": nonce.group(1), "token": token, "next": ""})


def csrf_of(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


@pytest.fixture
def fleet(controller: Controller, tmp_path: Path) -> Controller:
    build_fleet(controller.url, controller.admin_token, controller.bootstrap_token, tmp_path / "agents")
    return controller


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_clears_it(controller: Controller) -> None:
    with browser(controller) as ui:
        assert ui.get("/ui/fleet").headers["location"].startswith("/ui/signin?next=%2Fui%2Ffleet")
        signed = sign_in(ui, controller.admin_token)
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/fleet"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("gpufabric_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/ui" in cookie and "Secure" not in cookie  # plain http here; https adds Secure
        fleet_page = ui.get("/ui/fleet")
        assert fleet_page.status_code == 200 and "<title>Fleet · gpufabric</title>" in fleet_page.text
        assert "script-src 'self'" in fleet_page.headers["content-security-policy"]
        out = ui.post("/ui/signout", data={"csrf": csrf_of(ui, "/ui/fleet")})
        assert out.status_code == 303 and 'gpufabric_session=""' in out.headers["set-cookie"]
        assert ui.get("/ui/fleet").status_code == 303  # back to the sign-in form
    # Served over https (here: a TLS proxy on 127.0.0.1 saying so, as uvicorn trusts by default): Secure too.
    with httpx.Client(base_url=controller.url, headers={"X-Forwarded-Proto": "https"}, timeout=30) as tls:
        form = tls.get("/ui/signin")
        assert "Secure" in form.headers["set-cookie"]
        nonce = CSRF.search(form.text)
        assert nonce
        tls.cookies.set("gpufabric_signin", nonce.group(1))  # httpx keeps no Secure cookie over plain http
        signed = tls.post("/ui/signin", data={"csrf": nonce.group(1), "token": controller.admin_token})
        assert signed.status_code == 303 and "; Secure" in signed.headers["set-cookie"]


def test_bad_tokens_get_a_clear_message_and_no_cookie(controller: Controller) -> None:
    with browser(controller) as ui:
        for token, status, message in (
            ("gft_nope_nope", 401, "unknown or revoked"),
            ("", 422, "Paste an API token"),
            (controller.bootstrap_token, 403, "agent-bootstrap token cannot sign in"),
        ):
            answer = sign_in(ui, token)
            assert answer.status_code == status and message in answer.text, answer.text
            assert "gpufabric_session" not in answer.headers.get("set-cookie", "")
        form = ui.get("/ui/signin")
        nul = ui.post("/ui/signin", content=f"csrf={CSRF.search(form.text).group(1)}&token=gft_a%00b",  # type: ignore[union-attr]
                      headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert nul.status_code == 422 and "NUL character" in nul.text
        # Form bodies are for the dashboard only: the REST API still takes JSON alone.
        assert ui.post("/v1/leases", data={"token": "x"}).status_code == 415
        # A sign-in post without the form's own nonce (another site's form) is refused.
        forged = ui.post("/ui/signin", data={"csrf": "x", "token": controller.admin_token})
        assert forged.status_code == 403 and "gpufabric_session" not in forged.headers.get("set-cookie", "")


def test_a_revoked_token_ends_the_session(controller: Controller) -> None:
    with controller.db.session() as session:
        row, token = create_api_token(session, role=Role.admin, name="short-lived")
        key_id = row.key_id
    with browser(controller) as ui:
        assert sign_in(ui, token).status_code == 303
        assert ui.get("/ui/fleet").status_code == 200
        with controller.admin() as admin:
            assert admin.delete(f"/v1/tokens/{key_id}").status_code in (200, 204)
        assert ui.get("/ui/fleet").status_code == 303


def test_posts_without_the_csrf_token_change_nothing(fleet: Controller) -> None:
    with browser(fleet) as ui:
        sign_in(ui, fleet.admin_token)
        for data in ({}, {"csrf": "wrong", "reason": "x"}):
            refused = ui.post(f"/ui/hosts/{L4_HOST}/drain", data=data)
            assert refused.status_code == 403 and "CSRF" in refused.text
        with fleet.admin() as admin:
            assert admin.get(f"/v1/hosts/{L4_HOST}").json()["admin_state"] == "active"
            assert not [e for e in admin.get("/v1/audit", params={"action": "host.drain"}).json()]
        # With the session's token it goes through the REST route: drained, and audited as the admin.
        done = ui.post(f"/ui/hosts/{L4_HOST}/drain", data={"csrf": csrf_of(ui, "/ui/fleet"), "reason": "ui test"})
        assert done.status_code == 303 and done.headers["location"] == f"/ui/hosts/{L4_HOST}"
        assert 'id="admin-state">drained<' in ui.get(f"/ui/hosts/{L4_HOST}").text
        with fleet.admin() as admin:
            assert admin.get(f"/v1/hosts/{L4_HOST}").json()["admin_state"] == "drained"
            (entry,) = admin.get("/v1/audit", params={"action": "host.drain"}).json()
            assert entry["detail"]["reason"] == "ui test" and entry["role"] == "admin"
        audit = ui.get("/ui/audit", params={"action": "host.drain", "actor": entry["actor"]}).text
        assert audit.count("<td>host.drain</td>") == 1 and "<td>pool.create</td>" not in audit
        assert "<td>pool.create</td>" in ui.get("/ui/audit").text


def test_tenants_see_only_their_leases_and_no_admin_page(fleet: Controller) -> None:
    with fleet.db.session() as session:
        _, other = create_api_token(session, role=Role.tenant, name="other", tenant="globex")
    request = {"slices": [{"kind": "timeslice", "count": 1}]}
    with fleet.client(other) as api:
        theirs = api.post("/v1/leases", json=request).json()["id"]
    with browser(fleet) as ui:
        assert sign_in(ui, fleet.tenant_token).headers["location"] == "/ui/leases"
        csrf = csrf_of(ui, "/ui/leases/new")
        made = ui.post("/ui/leases/new", data={"csrf": csrf, "op": "create", "kind": "timeslice", "count": "1"})
        assert made.status_code == 303, made.text
        mine = made.headers["location"].rsplit("/", 1)[1]
        listing = ui.get("/ui/leases").text
        assert mine[:12] in listing and theirs[:12] not in listing
        page = ui.get(f"/ui/leases/{mine}").text
        assert 'id="lease-state">ready<' in page and "CUDA_VISIBLE_DEVICES" in page
        assert ui.get(f"/ui/leases/{theirs}").status_code == 404
        release = ui.post(f"/ui/leases/{theirs}/release", data={"csrf": csrf})
        assert release.status_code == 404
        for path in ("/ui/fleet", f"/ui/hosts/{MIG_HOST}", "/ui/validations", "/ui/audit", "/ui/fleet/hosts"):
            refused = ui.get(path)
            assert refused.status_code == 403 and "for admins" in refused.text, path
        assert ui.post(f"/ui/hosts/{MIG_HOST}/drain", data={"csrf": csrf}).status_code == 403
        released = ui.post(f"/ui/leases/{mine}/release", data={"csrf": csrf})
        assert released.status_code == 303
        page = ui.get(f"/ui/leases/{mine}").text
        assert 'id="lease-state">released<' in page and "Release this lease" not in page
        assert "<title>" in page and page.count('<g class="mark s-') == 6  # requested ... released
    with fleet.client(other) as api:
        assert api.get(f"/v1/leases/{theirs}").json()["state"] == "ready"
    with fleet.admin() as admin:
        assert admin.get(f"/v1/hosts/{MIG_HOST}").json()["admin_state"] == "active"


def test_mig_instances_are_drawn_to_scale_with_the_lease_holding_them(fleet: Controller) -> None:
    with fleet.client(fleet.tenant_token) as api:
        lease = api.post("/v1/leases", json={"slices": [{"kind": "mig", "profile": "3g.40gb"}]}).json()
    held = lease["allocations"][0]
    assert held["placement"] == {"start": 4, "size": 4}
    with fleet.admin() as admin:
        devices = admin.get(f"/v1/hosts/{MIG_HOST}").json()["devices"]
    with browser(fleet) as ui:
        sign_in(ui, fleet.admin_token)
        page = ui.get(f"/ui/hosts/{MIG_HOST}").text
    assert page.count(f'<a href="/ui/leases/{lease["id"]}" aria-label="3g.40gb: lease {lease["id"]}">') == 1
    for device in devices:
        section = page.split(f'data-uuid="{device["uuid"]}"', 1)[1].split("</section>", 1)[0]
        assert 'data-width="480.0" data-slices="8"' in section  # A100-80GB: 8 memory slices (GPU catalog)
        drawn = re.findall(
            r'<g class="part (\w+)" data-label="([^"]+)" data-start="(\d+)" data-size="(\d+)"(?: data-lease="(\w+)")?>'
            r'\s*<title>[^<]*</title>\s*<rect x="([\d.]+)" y="1" width="([\d.]+)"',
            section,
        )
        instances = [(m["profile"], m["placement_start"], m["placement_size"]) for m in device["mig_instances"]]
        assert [(label, int(s), int(n)) for _, label, s, n, *_ in drawn] == sorted(instances, key=lambda i: i[1])
        for state, label, start, size, holder, x, width in drawn:
            assert float(x) == pytest.approx(480 * int(start) / 8 + 1) and float(width) == pytest.approx(
                480 * int(size) / 8 - 2
            )
            if device["uuid"] == held["device"] and label == "3g.40gb":
                assert (state, holder, x) == ("leased", lease["id"], "241.00")  # start 4 of 8: half-way across
            else:
                assert state == "idle" and not holder


def test_timeslice_replicas_and_a_refusal_funnel(fleet: Controller) -> None:
    with browser(fleet) as ui:
        sign_in(ui, fleet.tenant_token)
        csrf = csrf_of(ui, "/ui/leases/new")
        preview = ui.post("/ui/leases/new", data={"csrf": csrf, "op": "preview", "kind": "timeslice", "count": "2"})
        assert preview.status_code == 200 and "Dry run: it fits" in preview.text
        assert L4_HOST not in preview.text and "(not shown to tenants)" in preview.text  # no host names to tenants
        refused = ui.post(
            "/ui/leases/new", data={"csrf": csrf, "op": "preview", "kind": "gpu", "count": "8", "model": "A100"}
        )
        assert refused.status_code == 409 and "Why nothing fits" in refused.text
        assert 'data-filter="slice-kind" data-removed-hosts="2"' in refused.text
        assert 'id="nearest-fit"' in refused.text
        bad = ui.post("/ui/leases/new", data={"csrf": csrf, "op": "preview", "kind": "gpu", "count": "lots"})
        assert bad.status_code == 422 and "count: &#39;lots&#39; is not a whole number" in bad.text
    with fleet.client(fleet.tenant_token) as api:
        assert api.get("/v1/leases").json() == []  # previews and refusals claimed nothing
    with browser(fleet) as ui:
        sign_in(ui, fleet.admin_token)
        page = ui.get(f"/ui/hosts/{L4_HOST}").text
        assert page.count('data-kind="timeslice"') == 4 and page.count('data-label="replica 3"') == 4


def test_health_events_and_vgpu_types_are_on_the_host_page(controller: Controller) -> None:
    """A GPU's health reasons from the last inventory (an XID 79: fell off the bus) are marks on the timeline."""
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    inventory = synthetic_inventory("ui-xid", gpus=2, health="unhealthy")
    inventory.gpus[1].health.reasons.append(
        HealthReason(code="xid-79", message="GPU has fallen off the bus", severity="unhealthy", since=since)
    )
    inventory.gpus[0].vgpu = VgpuInfo(
        supported=[VgpuType(id=7, name="NVIDIA A16-4Q", type_class="Quadro", framebuffer_mib=4096, max_instances=4)],
        creatable=[7],
    )
    with controller.client() as api:
        credential = register(api, controller.bootstrap_token, "ui-xid")
        assert report(api, credential, inventory, 1).status_code == 200
    with browser(controller) as ui:
        sign_in(ui, controller.admin_token)
        page = ui.get("/ui/hosts/ui-xid").text
        assert "<title>2026-01-02 03:04:05 UTC xid-79: GPU 1: GPU has fallen off the bus (unhealthy)</title>" in page
        assert page.count('<g class="mark">') == 1
        assert "vGPU types this GPU's driver offers: NVIDIA A16-4Q (4 max, creatable now)" in page
        assert ui.get("/ui/hosts/no-such-host").status_code == 404


def test_fleet_groups_counts_filters_and_its_page_limit(fleet: Controller) -> None:
    with fleet.client(fleet.tenant_token) as api:
        assert api.post("/v1/leases", json={"slices": [{"kind": "mig", "profile": "3g.40gb"}]}).status_code == 201
    with browser(fleet) as ui:
        sign_in(ui, fleet.admin_token)
        page = ui.get("/ui/fleet").text
        assert "pool ui-mig" in page and "pool ui-ts" in page
        row = page.split(f'<tr data-host="{MIG_HOST}">', 1)[1].split("</tr>", 1)[0]
        assert '<span class="nums">3 / 1 / 0</span>' in row  # 4 GPUs: one holds the leased instance
        assert "4 × NVIDIA A100-SXM4-80GB" in row and 's-ready">ready<' in row
        only_l4 = ui.get("/ui/fleet", params={"model": "L4"}).text
        assert f'data-host="{L4_HOST}"' in only_l4 and f'data-host="{MIG_HOST}"' not in only_l4
        fragment = ui.get("/ui/fleet/hosts", params={"pool": "ui-mig"}, headers={"X-Gpufabric-Fragment": "1"})
        assert (
            fragment.status_code == 200 and "<html" not in fragment.text and f'data-host="{MIG_HOST}"' in fragment.text
        )
        assert ui.get("/ui/fleet", params={"state": "drained"}).text.count("<tr data-host=") == 0
    with fleet.db.session() as session:
        limited = fleet_data.fleet(session, fleet_data.FleetFilter(), limit=1)
    assert (limited.shown, limited.matching) == (1, 2)


@pytest.mark.parametrize("target", ["//evil.example/ui/", "https://evil.example/", "/ui\\@evil.example", "/v1/hosts"])
def test_sign_in_returns_only_to_a_dashboard_page(controller: Controller, target: str) -> None:
    with browser(controller) as ui:
        nonce = CSRF.search(ui.get("/ui/signin").text)
        assert nonce
        signed = ui.post("/ui/signin", data={"csrf": nonce.group(1), "token": controller.admin_token, "next": target})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/fleet"
        again = ui.get("/ui/signin", params={"next": "/ui/audit?action=host.drain"})
        assert 'name="next" value="/ui/audit?action=host.drain"' in again.text


@pytest.fixture
def oidc_fabric(migrated_db: Database, database_url: str, tmp_path: Path) -> Iterator[tuple[Controller, KeyServer]]:
    """A controller taking OIDC tokens of a key set this test serves, fetched again on every check
    (``oidc_jwks_cache_s`` of a microsecond), so a key the provider withdraws stops its tokens at once."""
    mapping = tmp_path / "identity.yaml"
    mapping.write_text(oidc.MAPPING)
    with (
        oidc.key_server() as idp,
        running_controller(
            migrated_db,
            database_url,
            tmp_path,
            oidc_issuer=oidc.ISSUER,
            oidc_audience=oidc.AUDIENCE,
            oidc_jwks_url=idp.url,
            oidc_jwks_cache_s=1e-6,
            oidc_jwks_min_refresh_s=0,
            identity_mapping_file=mapping,
        ) as ctl,
    ):
        yield ctl, idp


def test_an_oidc_token_signs_in_with_the_same_cookie_and_csrf_rules(oidc_fabric: tuple[Controller, KeyServer]) -> None:
    controller, idp = oidc_fabric
    with browser(controller) as ui:
        signed = sign_in(ui, oidc.token(idp, preferred_username="ada"))
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/leases", signed.text
        cookie = signed.headers["set-cookie"]
        assert "gpufabric_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        leases = ui.get("/ui/leases")
        assert leases.status_code == 200 and "acme" in leases.text
        assert ui.get("/ui/fleet").status_code == 403, "a tenant's OIDC identity is a tenant on the dashboard too"
        # Posts still need the session's CSRF token.
        assert ui.post("/ui/signout", data={}).status_code == 403
        assert ui.get("/ui/leases").status_code == 200
        assert ui.post("/ui/signout", data={"csrf": csrf_of(ui, "/ui/leases")}).status_code == 303
        assert ui.get("/ui/leases").status_code == 303
    with browser(controller) as ui:
        admin = sign_in(ui, oidc.token(idp, groups=["gpu-admins"]))
        assert admin.status_code == 303 and admin.headers["location"] == "/ui/fleet"
        assert ui.get("/ui/fleet").status_code == 200


def test_refused_oidc_tokens_say_why_and_set_no_cookie(oidc_fabric: tuple[Controller, KeyServer]) -> None:
    controller, idp = oidc_fabric
    with browser(controller) as ui:
        for token, status, message in (
            (oidc.token(idp, exp=int(time.time()) - 120), 401, "the JWT has expired"),
            (oidc.token(idp, aud="someone-else"), 401, "not issued for audience"),
            (oidc.token(idp, groups=["visitors"], preferred_username="eve"), 403, "matches no rule"),
        ):
            answer = sign_in(ui, token)
            assert answer.status_code == status and message in answer.text, answer.text
            assert "gpufabric_session" not in answer.headers.get("set-cookie", "")
        long = sign_in(ui, "ey" + "a" * 5000 + ".b.c")
        assert long.status_code == 422 and "too long to keep in a cookie" in long.text


def test_an_oidc_session_ends_when_its_token_expires_or_its_key_is_withdrawn(
    oidc_fabric: tuple[Controller, KeyServer],
) -> None:
    controller, idp = oidc_fabric
    with browser(controller) as ui:
        assert sign_in(ui, oidc.token(idp)).status_code == 303
        assert ui.get("/ui/leases").status_code == 200
        # The provider withdraws the key (a revocation): the next page load finds the token invalid.
        idp.add("k2")
        del idp.keys["k1"]
        gone = ui.get("/ui/leases")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/signin")
    with browser(controller) as ui:
        # Every page load checks the token's expiry: a session cookie holding a token past its exp is no session.
        ui.cookies.set("gpufabric_session", "nonce." + oidc.token(idp, "k2", exp=int(time.time()) - 120))
        expired = ui.get("/ui/leases")
        assert expired.status_code == 303 and expired.headers["location"].startswith("/ui/signin")
        ui.cookies.set("gpufabric_session", "nonce." + oidc.token(idp, "k2"))
        assert ui.get("/ui/leases").status_code == 200
