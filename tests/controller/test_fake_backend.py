"""The ``fake`` backend kind, shipped like Ironic's fake-hardware: opt-in, declares its capabilities like every
kind, and leases every slice kind on agent-run simulated hosts, vGPUs included (attached by a pretend hypervisor,
marked simulated), end to end through the REST API; ``no_valid_host`` makes a host refuse as Nova's scheduler does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runner import AgentConfig, AgentRunner
from controller.backends.contract import OPERATIONS
from controller.backends.registry import build_backends
from controller.store.db import Database
from tests.support.controller import Controller, running_controller
from tests.support.helpers import assert_problem

VGPU = {"slices": [{"kind": "vgpu", "vgpu_type": "A16-4C"}]}


def test_fake_is_opt_in_and_declares_its_capabilities(migrated_db: Database) -> None:
    assert "fake" not in build_backends(migrated_db).kinds()
    fake = build_backends(migrated_db, ["fake"]).get("fake")
    caps = fake.capabilities
    assert caps.slice_kinds >= {"gpu", "mig", "vgpu"} and "simulated" in caps.access
    assert all(caps.reasons().values()) and set(caps.unsupported) == set(OPERATIONS)


@pytest.fixture
def fake_controller(migrated_db: Database, database_url: str, tmp_path: Path) -> Iterator[Controller]:
    with running_controller(migrated_db, database_url, tmp_path, backend_kinds=["static", "fake"]) as ctl:
        yield ctl


def _agent(ctl: Controller, tmp_path: Path, hostname: str, sim: str) -> AgentRunner:
    agent = AgentRunner(
        AgentConfig(
            controller_url=ctl.url,
            state_file=tmp_path / hostname / "state.json",
            bootstrap_token=ctl.bootstrap_token,
            sim=sim,
            sim_state=tmp_path / hostname / "sim.json",
            hostname=hostname,
            backend="pretend-cloud",
        )
    )
    agent.cycle()
    return agent


def test_a_vgpu_lease_on_a_fake_hypervisor_is_ready_and_released(fake_controller: Controller, tmp_path: Path) -> None:
    ctl = fake_controller
    with ctl.admin() as admin:
        made = admin.post("/v1/backends", json={"name": "pretend-cloud", "kind": "fake", "config": {"region": "lab"}})
        assert made.status_code == 201, made.text
        assert_problem(
            admin.post("/v1/backends", json={"name": "typo", "kind": "fake", "config": {"no_valid_hosts": []}}),
            422,
            "validation-error",
        )
    _agent(ctl, tmp_path, "fake-a16", "a16-vgpu")
    with ctl.client(ctl.tenant_token) as api:
        created = api.post("/v1/leases", json=VGPU)
        assert created.status_code == 201, created.text
        lease = created.json()
        assert lease["state"] == "ready", lease
        node = lease["result"]["nodes"][0]
        attached = next(s for s in node["slices"] if s["kind"] == "vgpu")
        assert attached["vgpu_type"] == "A16-4C" and attached["simulated"] is True
        assert len(attached["mdev_uuids"]) == 1 and len(attached["mdev_uuids"][0]) == 36
        again = api.get(f"/v1/leases/{lease['id']}").json()
        assert again["result"] == lease["result"], "the same mdev UUID when asked again"
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"


def test_no_valid_host_sends_the_lease_elsewhere(fake_controller: Controller, tmp_path: Path) -> None:
    ctl = fake_controller
    with ctl.admin() as admin:
        config = {"no_valid_host": ["fake-h100-bad"]}
        assert admin.post("/v1/backends", json={"name": "pretend-cloud", "kind": "fake", "config": config}).is_success
    _agent(ctl, tmp_path, "fake-h100-bad", "h100-8x")
    gpu4 = {"slices": [{"kind": "gpu", "count": 4}]}
    with ctl.client(ctl.tenant_token) as api:
        refused = api.post("/v1/leases", json=gpu4)
        body = refused.json()
        assert refused.status_code in (201, 409), refused.text
        assert "no valid host" in str(body), body  # the only host refuses: the lease fails with the reason
        _agent(ctl, tmp_path, "fake-l4-good", "l4-4x")  # (a second h100-8x would report the same GPU UUIDs)
        lease = api.post("/v1/leases", json=gpu4).json()
    assert lease["state"] == "ready", lease
    assert lease["result"]["host"] == "fake-l4-good"


def test_a_tenant_sees_counts_and_reasons_of_failed_attempts_not_the_hosts(
    fake_controller: Controller, tmp_path: Path
) -> None:
    """The lease a tenant holds names its own host; the hosts tried before it (here one that answered "no valid
    host") are counts and reasons to the tenant, in ``placement``, the lease's reason and its transitions.
    Admins keep every host name."""
    ctl = fake_controller
    with ctl.admin() as admin:
        config = {"no_valid_host": ["fake-l4-bad"]}
        assert admin.post("/v1/backends", json={"name": "pretend-cloud", "kind": "fake", "config": config}).is_success
    _agent(ctl, tmp_path, "fake-l4-bad", "l4-4x")
    _agent(ctl, tmp_path, "fake-h100-good", "h100-8x")
    # Four GPUs of any model: packing tries the four-GPU host first (it fills it), which refuses.
    gpu4 = {"slices": [{"kind": "gpu", "count": 4}]}
    with ctl.client(ctl.tenant_token) as api:
        created = api.post("/v1/leases", json=gpu4)
        lease = created.json()
        listed = next(x for x in api.get("/v1/leases").json() if x["id"] == lease["id"])
        shown = api.get(f"/v1/leases/{lease['id']}").json()
    assert lease["state"] == "ready" and lease["result"]["host"] == "fake-h100-good", lease
    for doc in (lease, listed, shown):
        placement = doc["placement"]
        assert placement["failed_attempts"] == [
            {"hosts": 1, "reason": "no valid host was found (another host: fake backend's no_valid_host)"}
        ], placement
        assert placement["tried_hosts_count"] == 1 and "tried_hosts" not in placement
        assert "fake-l4-bad" not in str(doc), doc
        assert doc["allocations"][0]["host"] == "fake-h100-good"  # its own host it still sees
    assert any("another host" in t["reason"] for t in shown["transitions"]), shown["transitions"]
    with ctl.admin() as admin:
        full = admin.get(f"/v1/leases/{lease['id']}").json()
    assert full["placement"]["tried_hosts"] == ["fake-l4-bad"]
    assert full["placement"]["failed_attempts"][0]["hosts"] == ["fake-l4-bad"]
    assert "fake-l4-bad" in full["placement"]["failed_attempts"][0]["reason"]


def test_a_tenant_sees_no_host_of_a_lease_that_failed_everywhere(fake_controller: Controller, tmp_path: Path) -> None:
    ctl = fake_controller
    with ctl.admin() as admin:
        config = {"no_valid_host": ["fake-h100-bad"]}
        assert admin.post("/v1/backends", json={"name": "pretend-cloud", "kind": "fake", "config": config}).is_success
    _agent(ctl, tmp_path, "fake-h100-bad", "h100-8x")
    with ctl.client(ctl.tenant_token) as api:
        refused = api.post("/v1/leases", json={"slices": [{"kind": "gpu", "count": 4}]})
        assert_problem(refused, 409, "lease-failed")
        body = refused.json()
        shown = api.get(f"/v1/leases/{body['lease_id']}").json()
    for doc in (body, shown):
        text = json.dumps(doc)
        assert "fake-h100-bad" not in text, text[max(0, text.find("fake-h100-bad") - 300) :][:400]
        assert "no valid host" in str(doc)
    assert shown["placement"]["failed_attempts"][0]["hosts"] == 1
