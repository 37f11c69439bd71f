"""The agent loop against a real controller and the NVML simulator, sent desired states it cannot apply.

Whatever the reason (a document that bypassed the controller's validation, a layout the GPUs cannot take, a
host failure while applying), the agent reports a failed apply of that revision, which the admin sees on
``GET /v1/hosts/{name}``, and keeps reporting: the host stays ``ready`` and converges once the admin fixes the
desired state.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agent.backoff import apply_retry_delay_s
from agent.runner import AgentConfig, AgentRunner
from controller.store.models import DesiredOverride, Host
from tests.support.controller import Controller


def _agent(controller: Controller, tmp_path: Path, hostname: str, sim: str = "a100-80gb-4x") -> AgentRunner:
    return AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=tmp_path / "agent" / "state.json",
            bootstrap_token=controller.bootstrap_token,
            sim=sim,
            sim_state=tmp_path / "sim-state.json",
            hostname=hostname,
            interval_s=0.05,
            interval_jitter=0.0,
        )
    )


def _mig(mig_devices: dict[str, Any]) -> dict[str, Any]:
    entry = {"devices": "all", "mig-enabled": True, "mig-devices": mig_devices}
    return {"config": {"version": "v1", "mig-configs": {"target": [entry]}}, "selected": "target"}


def _write_override_into_store(controller: Controller, hostname: str, mig: dict[str, Any]) -> None:
    """As an older controller, a restore from backup or a hand-edited row would: no API validation."""
    with controller.db.session() as session:
        host_id = session.scalar(select(Host.id).where(Host.hostname == hostname))
        assert host_id is not None
        session.add(DesiredOverride(host_id=host_id, mig=mig))


class _Errors(logging.Handler):
    """Collects ERROR records of the agent (a failed cycle logs one) and wakes the waiting test."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.wake = wake

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.wake.set()


def _run_until(agent: AgentRunner, done: Any, *, more_cycles: int) -> list[logging.LogRecord]:
    """Run the real loop (``AgentRunner.run``) in a thread until ``done()`` held and ``more_cycles`` cycles
    followed, or a cycle failed; return the agent's ERROR records."""
    stop = threading.Event()
    wake = threading.Event()
    errors = _Errors(wake)
    logger = logging.getLogger("gpufabric.agent")
    logger.addHandler(errors)
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        target: int | None = None
        while thread.is_alive() and not errors.records:
            if target is None and done():
                target = agent.cycles + more_cycles
            if target is not None and agent.cycles >= target:
                break
            wake.wait(0.02)
    finally:
        stop.set()
        thread.join()
        logger.removeHandler(errors)
    return errors.records


def test_agent_loop_survives_a_desired_state_written_past_the_api(controller: Controller, tmp_path: Path) -> None:
    """The issue's reproduction: a count of 10^21 made every cycle raise OverflowError until the host was
    marked unreachable. Now the agent parses it with the shared models and reports what is wrong."""
    agent = _agent(controller, tmp_path, "bypass-a100")
    agent.cycle()
    _write_override_into_store(controller, "bypass-a100", _mig({"1g.10gb": 10**21}))
    with controller.admin() as api:
        revision = api.get("/v1/hosts/bypass-a100").json()["desired"]["revision"]

        def reported() -> bool:
            applied = api.get("/v1/hosts/bypass-a100").json()["applied"]
            return applied is not None and applied["revision"] == revision

        errors = _run_until(agent, reported, more_cycles=3)
        assert errors == [], [r.getMessage() for r in errors]
        host = api.get("/v1/hosts/bypass-a100").json()
        assert host["status"] == "ready" and host["converged"] is False
        assert host["applied"]["ok"] is False
        assert "profile '1g.10gb': count must be >= 0 and <= 7" in host["applied"]["message"]
        assert all(d["mig_mode"] == "disabled" for d in host["devices"]), "the GPUs were not touched"

        # The admin fixes it through the API: the agent (restarted, its loop has stopped) converges.
        fixed = api.put("/v1/hosts/bypass-a100/desired", json={"mig": _mig({"3g.40gb": 2})})
        assert fixed.status_code == 200, fixed.text
        _agent(controller, tmp_path, "bypass-a100").cycle()
        host = api.get("/v1/hosts/bypass-a100").json()
        assert host["converged"] is True and host["applied"]["ok"] is True
        assert all([m["profile"] for m in d["mig_instances"]] == ["3g.40gb"] * 2 for d in host["devices"])


def test_agent_reports_a_layout_its_gpus_cannot_take(controller: Controller, tmp_path: Path) -> None:
    """Valid mig-parted, accepted for an empty pool, but for A100 40GB: this host has A100 80GB GPUs."""
    agent = _agent(controller, tmp_path, "pool-a100")
    agent.cycle()
    with controller.admin() as api:
        policy = {"mig": _mig({"1g.5gb": 7})}
        assert api.post("/v1/pools", json={"name": "a100-40gb", "policy": policy}).status_code == 201
        host = api.put("/v1/hosts/pool-a100/pool", json={"pool": "a100-40gb"}).json()
        revision = host["desired"]["revision"]
        for _ in range(3):
            reply = agent.cycle()
            assert reply.desired.revision == revision
        host = api.get("/v1/hosts/pool-a100").json()
        assert host["status"] == "ready" and host["converged"] is False
        assert host["applied"] == {**host["applied"], "revision": revision, "ok": False}
        assert "profile '1g.5gb' does not exist on this GPU" in host["applied"]["message"]
        assert "1g.10gb" in host["applied"]["message"], "names what the GPU offers"
        assert all(not d["mig_instances"] for d in host["devices"])


def test_agent_reports_a_host_failure_while_applying(
    controller: Controller, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a config error: the agent cannot write its sharing state (a directory is where its temporary file
    goes), an OSError nothing expects. It raised out of every cycle before; now it is a failed apply, and
    once the host is fixed the next revision is applied."""
    agent = _agent(controller, tmp_path, "broken-l4", sim="l4-4x")
    agent.cycle()
    blocker = tmp_path / "agent" / "sharing" / "sharing-state.tmp"
    blocker.mkdir(parents=True)
    sharing = {
        "config": {
            "version": "v1",
            "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
        }
    }
    with controller.admin() as api:
        assert api.put("/v1/hosts/broken-l4/desired", json={"sharing": sharing}).status_code == 200
        with caplog.at_level(logging.ERROR, logger="gpufabric.agent"):
            agent.cycle()
            agent.cycle()
        host = api.get("/v1/hosts/broken-l4").json()
        assert host["status"] == "ready" and host["applied"]["ok"] is False
        message = host["applied"]["message"]
        assert message.startswith("sharing: failed (IsADirectoryError"), message
        assert any("applying the sharing config failed" in r.getMessage() for r in caplog.records)

        blocker.rmdir()
        sharing["config"]["sharing"]["timeSlicing"]["resources"][0]["replicas"] = 2
        assert api.put("/v1/hosts/broken-l4/desired", json={"sharing": sharing}).status_code == 200
        agent.cycle()
        host = api.get("/v1/hosts/broken-l4").json()
        assert host["converged"] is True, host["applied"]
        assert host["applied"]["message"].startswith("sharing time-slicing: ")


def test_a_failed_apply_is_tried_again_after_its_back_off(controller: Controller, tmp_path: Path) -> None:
    """The operator fixes the host, not the desired state: the agent tries the same revision again once the
    back-off after its failure is over (not at every cycle before it), and converges."""
    agent = _agent(controller, tmp_path, "retry-l4", sim="l4-4x")
    agent.cycle()
    blocker = tmp_path / "agent" / "sharing" / "sharing-state.tmp"
    blocker.mkdir(parents=True)
    sharing = {
        "config": {
            "version": "v1",
            "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
        }
    }
    with controller.admin() as api:
        revision = api.put("/v1/hosts/retry-l4/desired", json={"sharing": sharing}).json()["desired"]["revision"]
        agent.cycle()
        failed_at = api.get("/v1/hosts/retry-l4").json()["applied"]
        assert failed_at["revision"] == revision and failed_at["ok"] is False
        assert agent.state.apply_failures == 1

        blocker.rmdir()  # the host is fixed
        agent.cycle()  # within the back-off: not tried again
        assert api.get("/v1/hosts/retry-l4").json()["applied"] == failed_at

        later = datetime.now(UTC) + timedelta(seconds=apply_retry_delay_s(1) + 1)
        agent.clock = lambda: later
        agent.cycle()
        host = api.get("/v1/hosts/retry-l4").json()
        assert host["applied"]["revision"] == revision and host["applied"]["ok"] is True, host["applied"]
        assert host["converged"] is True and agent.state.apply_failures == 0


def test_apply_back_off_doubles_up_to_its_cap() -> None:
    assert [apply_retry_delay_s(n) for n in (1, 2, 3, 4, 5, 6, 20)] == [60, 120, 240, 480, 900, 900, 900]
