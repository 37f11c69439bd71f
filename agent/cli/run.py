"""`gpufabric-agent run`: the agent loop against a controller."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import SimOption, SimStateOption, fail
from agent.runner import AgentConfig, AgentError, AgentRunner
from agent.state import default_state_file


def run(
    controller: Annotated[str, typer.Option("--controller", envvar="GPUFABRIC_CONTROLLER", help="Controller URL")],
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    bootstrap_token: Annotated[
        str | None,
        typer.Option("--bootstrap-token", envvar="GPUFABRIC_BOOTSTRAP_TOKEN", help="Needed for the first registration"),
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Seconds between reports (default: what the controller says)")
    ] = None,
    interval_jitter: Annotated[
        float,
        typer.Option(
            "--interval-jitter",
            envvar="GPUFABRIC_AGENT_INTERVAL_JITTER",
            min=0.0,
            max=0.5,
            help="Spread each wait between reports by up to this fraction of the interval (0.1: 27-33 s "
            "for 30 s), so a fleet does not report in lockstep; 0 disables",
        ),
    ] = 0.1,
    startup_splay: Annotated[
        float,
        typer.Option(
            "--startup-splay",
            envvar="GPUFABRIC_AGENT_STARTUP_SPLAY",
            min=0.0,
            help="Wait a random 0..N seconds before the first report, so a rollout or a fleet-wide restart "
            "does not arrive at once (not with --once)",
        ),
    ] = 0.0,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Name to register as (default: this host's)")
    ] = None,
    state_file: Annotated[
        Path | None, typer.Option("--state-file", envvar="GPUFABRIC_AGENT_STATE", help="Credential and progress")
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Backend to register the host under")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value, repeatable")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit")] = False,
) -> None:
    """Register with the controller, report inventory, converge on the desired state it sends."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = dict(item.split("=", 1) for item in (label or []) if "=" in item)
    config = AgentConfig(
        controller_url=controller,
        state_file=state_file or default_state_file(),
        bootstrap_token=bootstrap_token,
        sim=sim,
        sim_state=sim_state,
        hostname=hostname,
        interval_s=interval,
        interval_jitter=interval_jitter,
        startup_splay_s=startup_splay,
        backend=backend,
        labels=labels,
    )
    stop = threading.Event()
    runner = AgentRunner(config, stop=stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if once:
            runner.cycle()
        else:
            runner.run(stop)
    except AgentError as exc:
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        pass
