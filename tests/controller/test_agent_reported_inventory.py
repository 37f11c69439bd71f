"""The agent keeps the inventory the controller accepted beside its state file (``inventory.json``), and that file
is what the Cyborg agent driver reads (``drivers.cyborg.devices``): same GPUs, addresses and models."""

from __future__ import annotations

import json
from pathlib import Path

from agent.runner import AgentConfig, AgentRunner
from drivers.cyborg.devices import read_inventory
from tests.support.controller import Controller


def test_agent_keeps_its_reported_inventory_for_cyborg(controller: Controller, tmp_path: Path) -> None:
    state_file = tmp_path / "agent" / "agent.json"
    inventory_file = state_file.with_name("inventory.json")
    agent = AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=state_file,
            bootstrap_token=controller.bootstrap_token,
            sim="a100-80gb-4x",
            sim_state=tmp_path / "sim-state.json",
            hostname="gpu-cyborg-1",
            interval_s=0.05,
            interval_jitter=0.0,
        )
    )
    assert not inventory_file.exists()
    agent.cycle()
    kept = json.loads(inventory_file.read_text())
    assert kept["host"]["hostname"] == "gpu-cyborg-1" and kept["schema_version"] == "gpufabric.inventory/v1"
    with controller.admin() as api:
        host = api.get("/v1/hosts/gpu-cyborg-1").json()
    gpus = read_inventory(inventory_file)
    assert [g.uuid for g in gpus] == [d["uuid"] for d in sorted(host["devices"], key=lambda d: d["index"])]
    assert [g.address for g in gpus] == ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0"]
    assert {g.model for g in gpus} == {"NVIDIA A100-SXM4-80GB"}
    assert {g.traits for g in gpus} == {("OWNER_CYBORG", "CUSTOM_NVIDIA_20B2", "CUSTOM_GPU_A100_SXM4_80GB")}
    assert oct(inventory_file.stat().st_mode & 0o777) == "0o644"
