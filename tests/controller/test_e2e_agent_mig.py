"""End to end through real HTTP: a simulated A100 host registers, reports, gets a MIG layout from
an admin through the API, converges, and its next inventory shows the layout."""

from __future__ import annotations

from pathlib import Path

from agent.runner import AgentConfig, AgentRunner
from tests.support.controller import Controller

MIG_DOC = {
    "version": "v1",
    "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        "all-3g.40gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}],
    },
}


def test_agent_converges_to_mig_layout_set_by_admin(controller: Controller, tmp_path: Path) -> None:
    agent = AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=tmp_path / "agent" / "state.json",
            bootstrap_token=controller.bootstrap_token,
            sim="a100-80gb-4x",
            sim_state=tmp_path / "sim-state.json",
            hostname="e2e-a100",
        )
    )
    agent.cycle()
    with controller.admin() as api:
        host = api.get("/v1/hosts/e2e-a100").json()
        assert host["status"] == "ready"
        assert host["gpus"] == 4
        assert all(d["mig_mode"] == "disabled" and not d["mig_instances"] for d in host["devices"])

        response = api.put("/v1/hosts/e2e-a100/desired", json={"mig": {"config": MIG_DOC, "selected": "all-3g.40gb"}})
        assert response.status_code == 200, response.text
        revision = response.json()["desired"]["revision"]
        assert response.json()["converged"] is False

        reply = agent.cycle()
        assert reply.desired.revision == revision
        assert agent.state.applied is not None and agent.state.applied.ok, agent.state.applied

        host = api.get("/v1/hosts/e2e-a100").json()
        assert host["converged"] is True
        assert host["applied"]["revision"] == revision
        for device in host["devices"]:
            assert device["mig_mode"] == "enabled"
            assert [m["profile"] for m in device["mig_instances"]] == ["3g.40gb", "3g.40gb"]
            assert all(m["uuid"].startswith("MIG-") for m in device["mig_instances"])
        inventory_gpus = host["inventory"]["gpus"]
        assert all(len(g["mig_instances"]) == 2 for g in inventory_gpus)

        # Unchanged afterwards: the next cycle is a cheap heartbeat and changes nothing.
        generation = host["inventory_generation"]
        agent.cycle()
        assert api.get("/v1/hosts/e2e-a100").json()["inventory_generation"] == generation

        devices = api.get("/v1/devices", params={"model": "NVIDIA A100-SXM4-80GB", "host": "e2e-a100"}).json()
        assert len(devices) == 4


def test_agent_survives_controller_outage(controller: Controller, tmp_path: Path) -> None:
    import pytest

    from agent.runner import ControllerUnreachable

    config = AgentConfig(
        controller_url=controller.url,
        state_file=tmp_path / "state.json",
        bootstrap_token=controller.bootstrap_token,
        sim="l4-4x",
        sim_state=tmp_path / "sim.json",
        hostname="outage-l4",
    )
    AgentRunner(config).cycle()
    sim_state_before = (tmp_path / "sim.json").read_bytes() if (tmp_path / "sim.json").exists() else b""
    down = AgentRunner(AgentConfig(**{**config.__dict__, "controller_url": "http://127.0.0.1:9"}))
    with pytest.raises(ControllerUnreachable):
        down.cycle()
    after = (tmp_path / "sim.json").read_bytes() if (tmp_path / "sim.json").exists() else b""
    assert after == sim_state_before, "GPUs must stay untouched while the controller is down"
    # Back: the same credential (state file) still works and reports again.
    again = AgentRunner(config)
    assert again.state.credential is not None
    reply = again.cycle()
    assert reply.hostname == "outage-l4"
