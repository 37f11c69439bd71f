"""The agent as a DaemonSet or a systemd unit starts it: `gpufabric-agent run --once` with nothing but the
environment those files set. In a DaemonSet the host registers under NODE_NAME (the node), not the pod's name."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app as agent_app
from agent.state import exclusive_state
from tests.support.controller import Controller


def test_the_agent_runs_from_the_environment_alone_and_registers_under_node_name(
    controller: Controller, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "NODE_NAME": "ip-10-0-1-7.ec2.internal",
        "GPUFABRIC_CONTROLLER_URL": controller.url,
        "GPUFABRIC_BOOTSTRAP_TOKEN": controller.bootstrap_token,
        "GPUFABRIC_STATE_DIR": str(tmp_path / "state"),
        "GPUFABRIC_AGENT_CONFIG": str(tmp_path / "none.yaml"),
        "GPUFABRIC_LOG_LEVEL": "info",
    }
    (tmp_path / "none.yaml").write_text("{}\n")
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(agent_app, ["run", "--once", "--sim", "h100-8x"], env=env)
    assert result.exit_code == 0, result.output
    # httpx logs each request at INFO (a heartbeat line per interval); the agent keeps those for debug.
    assert not [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]
    assert (tmp_path / "state" / "agent.json").is_file()  # GPUFABRIC_STATE_DIR holds the credential
    with controller.admin() as api:
        host = api.get("/v1/hosts/ip-10-0-1-7.ec2.internal")
        assert host.status_code == 200, host.text
        assert len(host.json()["devices"]) == 8
    # A second agent on the same state (a copied unit file, two DaemonSet pods on one hostPath): refused at
    # start with the other's pid, instead of both overwriting the credential.
    with exclusive_state(tmp_path / "state" / "agent.json"):
        second = CliRunner().invoke(agent_app, ["run", "--once", "--sim", "h100-8x"], env=env)
    assert second.exit_code == 2, second.output
    assert f"another gpufabric-agent (pid {os.getpid()}) is using" in second.output
    assert "GPUFABRIC_STATE_DIR" in second.output
    # Without a controller URL anywhere: a one-line error naming the variable, exit 2.
    bare = {k: v for k, v in env.items() if k != "GPUFABRIC_CONTROLLER_URL"}
    missing = CliRunner().invoke(agent_app, ["run", "--once", "--sim", "h100-8x"], env=bare)
    assert missing.exit_code == 2 and "GPUFABRIC_CONTROLLER_URL" in missing.output
