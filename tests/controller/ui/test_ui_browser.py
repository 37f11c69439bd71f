"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the demo fleet (a controller
on a free port with SQLite, five simulated hosts whose agents run as processes). One fleet for the module; a
handful of tests.

Without /usr/bin/chromium these skip (``apt-get install chromium``), unless ``GPUFABRIC_REQUIRE_BROWSER=1``
(CI, ``.ci/run``), when that is a failure. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.demo.fleet import load_fleet
from controller.demo.run import Demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui-browser")]
MIG_HOST, L4_HOST = "demo-a100-80gb-1", "demo-l4-1"
DEMO_HOSTS = sorted(h.name for h in load_fleet().hosts)
DEADLINE_S = 180.0


def _browser_or_skip() -> Any:
    why = ""
    if not os.access(CHROMIUM, os.X_OK):
        why = f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = why or "browser tests need the playwright package (the dev extra)"
    if why:
        if os.environ.get("GPUFABRIC_REQUIRE_BROWSER") == "1":
            pytest.fail(why + "; GPUFABRIC_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(why)
    return sync_playwright


@dataclass
class Site:
    url: str
    admin_token: str
    tenant_token: str
    other_tenant_token: str

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The demo fleet (``./dev demo``'s five simulated hosts, their agents as processes), ready."""
    demo = Demo(fleet=load_fleet(), data_dir=tmp_path_factory.mktemp("ui-browser"), agent_interval_s=2.0)
    try:
        demo.start_controller()
        demo.configure()
        demo.start_agents()
        demo.assign_pools(DEADLINE_S)
        demo.wait_ready(DEADLINE_S)
        with demo.client() as admin:
            tokens = [
                admin.post("/v1/tokens", json={"role": "tenant", "tenant": t, "name": f"ui-{t}"}).json()["token"]
                for t in ("acme", "globex")
            ]
        yield Site(demo.url, demo.admin_token, *tokens)
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15000)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, site: Site, token: str) -> None:
    page.goto(f"{site.url}/ui")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("nav[aria-label=Main]")


def test_admin_fleet_to_host_drawing_and_drain_with_confirmation(page: Any, site: Site) -> None:
    sign_in(page, site, site.admin_token)
    assert page.title() == "Fleet · gpufabric"
    hosts = page.locator("tr[data-host]")
    assert sorted(hosts.evaluate_all("rows => rows.map(r => r.dataset.host)")) == DEMO_HOSTS
    page.get_by_role("link", name=MIG_HOST).click()
    page.wait_for_url(f"**/ui/hosts/{MIG_HOST}")
    with site.api(site.admin_token) as api:
        devices = api.get(f"/v1/hosts/{MIG_HOST}").json()["devices"]
    for device in devices:
        gpu = page.locator(f'section.gpu[data-uuid="{device["uuid"]}"]')
        parts = "gs => gs.map(g => [g.dataset.label, Number(g.dataset.start), Number(g.dataset.size)])"
        drawn = gpu.locator("g.part:not(.free)").evaluate_all(parts)
        reported = sorted((m["profile"], m["placement_start"], m["placement_size"]) for m in device["mig_instances"])
        assert sorted(tuple(d) for d in drawn) == reported
        # What no instance covers is drawn free, and nothing else is.
        covered = {s for _, start, size in reported for s in range(start, start + size)}
        free = {
            s for _, start, size in gpu.locator("g.part.free").evaluate_all(parts) for s in range(start, start + size)
        }
        assert free == set(range(8)) - covered
        # Drawn to scale in the browser's layout too: the instance at start 4 begins half-way across the GPU.
        frame = gpu.locator("rect.frame").bounding_box()
        half = gpu.locator('g.part[data-start="4"] rect').bounding_box()
        assert half["x"] - frame["x"] == pytest.approx(frame["width"] * 4 / 8, abs=frame["width"] / 100)

    page.goto(f"{site.url}/ui/hosts/{L4_HOST}")
    page.get_by_role("link", name="Drain…", exact=True).click()
    page.wait_for_url(f"**/ui/hosts/{L4_HOST}/drain")
    assert "Drain" in page.title()
    page.get_by_label("Reason (kept in the audit log)").fill("browser test")
    page.get_by_role("button", name=f"Drain {L4_HOST}").click()
    page.wait_for_url(f"**/ui/hosts/{L4_HOST}")
    assert page.locator("#admin-state").inner_text() == "drained"
    with site.api(site.admin_token) as api:
        assert api.get(f"/v1/hosts/{L4_HOST}").json()["admin_state"] == "drained"
    # The fleet page follows changes without a reload (it polls its host list every few seconds).
    page.goto(f"{site.url}/ui/fleet")
    row = page.locator(f'tr[data-host="{L4_HOST}"]')
    assert row.locator(".s-drained").count() == 1
    with site.api(site.admin_token) as api:
        assert api.post(f"/v1/hosts/{L4_HOST}/undrain").status_code == 200  # the next tests place leases there
    row.locator(".s-active").wait_for(timeout=15000)
    assert page.locator("#live-status").inner_text().startswith("Updated ")


def test_tenant_requests_a_lease_with_a_dry_run_and_sees_a_refusal_funnel(page: Any, site: Site) -> None:
    sign_in(page, site, site.tenant_token)
    assert page.title() == "Leases · gpufabric"
    page.get_by_role("link", name="Request a lease").click()
    page.get_by_label("Slice kind").select_option("timeslice")
    page.get_by_label("Count per node").fill("2")
    page.get_by_role("button", name="Preview (dry run)").click()
    assert page.locator("#preview").get_by_text("(not shown to tenants)").first.is_visible()  # no host names
    page.get_by_role("button", name="Request lease").click()
    page.wait_for_url(re.compile(r".*/ui/leases/[0-9a-f]{32}$"))
    assert page.locator("#lease-state").inner_text() == "ready"
    assert page.locator("#cuda-1").inner_text().startswith("GPU-")
    lease_id = page.url.rsplit("/", 1)[1]
    with site.api(site.tenant_token) as api:
        assert api.get(f"/v1/leases/{lease_id}").json()["state"] == "ready"

    page.goto(f"{site.url}/ui/leases/new")
    page.get_by_label("Slice kind").select_option("gpu")
    page.get_by_label("Count per node").fill("8")
    page.get_by_label("GPU model").fill("A100")
    page.get_by_role("button", name="Preview (dry run)").click()
    funnel = page.locator("#refusal svg.funnel")
    assert funnel.is_visible()
    assert funnel.locator('g.step[data-filter="slice-kind"]').count() == 1
    assert page.locator("#nearest-fit").is_visible()


def test_a_tenant_reaches_neither_another_tenants_lease_nor_admin_pages(page: Any, site: Site) -> None:
    with site.api(site.other_tenant_token) as api:
        theirs = api.post("/v1/leases", json={"slices": [{"kind": "timeslice", "count": 1}]}).json()["id"]
    sign_in(page, site, site.tenant_token)
    assert page.goto(f"{site.url}/ui/leases/{theirs}").status == 404
    for path in ("/ui/fleet", f"/ui/hosts/{MIG_HOST}", "/ui/validations", "/ui/audit"):
        answer = page.goto(site.url + path)
        assert answer.status == 403 and "for admins" in page.locator("[role=alert]").inner_text(), path
    assert page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts() == ["Leases"]


def test_keyboard_only_sign_in_and_navigation(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/ui")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(site.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/fleet")
    focused = []
    for _ in range(4):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert focused == ["Skip to content", "gpufabric", "Fleet", "Leases"]
    page.keyboard.press("Tab")  # Validations
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/validations")
    # The focus ring is visible (an outline, not removed).
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_pages_fit_a_390_px_phone_without_horizontal_scroll(chromium: Any, site: Site) -> None:
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, site, site.admin_token)
        for path in ("/ui/fleet", f"/ui/hosts/{MIG_HOST}", "/ui/leases/new", "/ui/validations", "/ui/audit"):
            page.goto(site.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide"
        page.goto(f"{site.url}/ui/leases/new")
        page.get_by_label("Tenant (admins act for one)").fill("acme")
        page.get_by_label("Count per node").fill("8")
        page.get_by_label("GPU model").fill("A100")
        page.get_by_role("button", name="Preview (dry run)").click()
        assert page.locator("#refusal svg.funnel").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
