"""The ``fake`` backend kind, shipped like Ironic's fake-hardware: opt-in, declares its capabilities like every
kind, and leases every slice kind on agent-run simulated hosts, vGPUs included (attached by a pretend hypervisor,
marked simulated), end to end through the REST API; ``no_valid_host`` makes a host refuse as Nova's scheduler does."""

from __future__ import annotations

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
