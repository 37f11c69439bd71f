"""A small real fleet for the dashboard's tests: simulated agents (the real agent loop, in-process) behind a
controller, one A100-80GB host whose MIG layout puts a 4g.40gb at placement start 0 and a 3g.40gb at start 4,
and one L4 host shared by time-slicing."""

from __future__ import annotations

from pathlib import Path

import httpx

from agent.runner import AgentConfig, AgentRunner

MIG_HOST = "ui-a100"
L4_HOST = "ui-l4"
MIG_POLICY = {
    "on_demand_mig": False,
    "mig": {
        "selected": "four-three",
        "config": {
            "version": "v1",
            "mig-configs": {
                "four-three": [{"devices": "all", "mig-enabled": True, "mig-devices": {"4g.40gb": 1, "3g.40gb": 1}}]
            },
        },
    },
}
TIMESLICE_POLICY = {
    "sharing": {
        "config": {
            "version": "v1",
            "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
        }
    }
}


def _agent(url: str, bootstrap: str, tmp: Path, hostname: str, spec: str) -> AgentRunner:
    return AgentRunner(
        AgentConfig(
            controller_url=url,
            state_file=tmp / hostname / "state.json",
            bootstrap_token=bootstrap,
            sim=spec,
            sim_state=tmp / hostname / "sim-state.json",
            hostname=hostname,
        )
    )


def build_fleet(url: str, admin_token: str, bootstrap_token: str, tmp: Path) -> list[AgentRunner]:
    """Register both hosts, put them in their pools and let their agents converge (a few report cycles)."""
    agents = [
        _agent(url, bootstrap_token, tmp, MIG_HOST, "a100-80gb-4x"),
        _agent(url, bootstrap_token, tmp, L4_HOST, "l4-4x"),
    ]
    for a in agents:
        a.cycle()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as admin:
        for name, policy, host in (("ui-mig", MIG_POLICY, MIG_HOST), ("ui-ts", TIMESLICE_POLICY, L4_HOST)):
            assert admin.post("/v1/pools", json={"name": name, "policy": policy}).status_code == 201
            assert admin.put(f"/v1/hosts/{host}/pool", json={"pool": name}).status_code == 200
    for _ in range(3):
        for a in agents:
            a.cycle()
    return agents
