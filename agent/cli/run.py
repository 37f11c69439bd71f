"""`gpufabric-agent run`: the agent loop against a controller."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from agent.access.enforce import DeviceAccessConfig
from agent.cli.common import SimOption, SimStateOption, fail
from agent.kube import kube_node_config
from agent.runner import AgentConfig, AgentError, AgentRunner
from agent.settings import AgentSettings, AgentSettingsError, load_settings
from agent.state import StateInUse, default_state_file, exclusive_state


def run(
    controller: Annotated[
        str | None, typer.Option("--controller", help="Controller URL (env: GPUFABRIC_CONTROLLER_URL)")
    ] = None,
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    bootstrap_token: Annotated[
        str | None,
        typer.Option("--bootstrap-token", help="Needed for the first registration (env: GPUFABRIC_BOOTSTRAP_TOKEN)"),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            help="Seconds between reports (default: what the controller says) (env: GPUFABRIC_REPORT_INTERVAL)",
        ),
    ] = None,
    interval_jitter: Annotated[
        float | None,
        typer.Option(
            "--interval-jitter",
            min=0.0,
            max=0.5,
            help="Spread each wait between reports by up to this fraction of the interval (0.1: 27-33 s "
            "for 30 s), so a fleet does not report in lockstep; 0 disables (default 0.1; env: "
            "GPUFABRIC_AGENT_INTERVAL_JITTER)",
        ),
    ] = None,
    startup_splay: Annotated[
        float | None,
        typer.Option(
            "--startup-splay",
            min=0.0,
            help="Wait a random 0..N seconds before the first report, so a rollout or a fleet-wide restart "
            "does not arrive at once (not with --once) (default 0; env: GPUFABRIC_AGENT_STARTUP_SPLAY)",
        ),
    ] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname", help="Name to register as (env: GPUFABRIC_HOSTNAME, else NODE_NAME; default: this host's)"
        ),
    ] = None,
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state-file",
            envvar="GPUFABRIC_AGENT_STATE",
            help="Credential and progress (default: agent.json in GPUFABRIC_STATE_DIR)",
        ),
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Backend to register the host under (env: GPUFABRIC_BACKEND)")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value, repeatable")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit")] = False,
) -> None:
    """Register with the controller, report inventory, converge on the desired state it sends.

    Settings come from these flags, then GPUFABRIC_* environment variables, then /etc/gpufabric/agent.yaml
    (or the file GPUFABRIC_AGENT_CONFIG names); see docs/operations.md."""
    labels = dict(item.split("=", 1) for item in (label or []) if "=" in item)
    try:
        settings = load_settings(
            controller_url=controller,
            bootstrap_token=bootstrap_token,
            report_interval=interval,
            interval_jitter=interval_jitter,
            startup_splay=startup_splay,
            hostname=hostname,
            backend=backend,
            labels=labels or None,
        )
    except AgentSettingsError as exc:
        raise fail(str(exc), 2) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "debug":
        # httpx logs every request at INFO: a heartbeat line every interval drowned everything else.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not settings.controller_url:
        raise fail("no controller URL: pass --controller or set GPUFABRIC_CONTROLLER_URL", 2)
    kube = kube_node_config(
        settings.kubernetes,
        node_name=settings.kube_node_name,
        api_url=settings.kube_api_url,
        kubeconfig=settings.kubeconfig,
        mig_config_file=settings.mig_config_file,
        mig_strategy=settings.mig_strategy,
    )
    config = AgentConfig(
        controller_url=settings.controller_url,
        state_file=state_file or settings.state_file or default_state_file(),
        bootstrap_token=settings.bootstrap_token,
        sim=sim,
        sim_state=sim_state,
        hostname=settings.hostname,
        interval_s=settings.report_interval,
        interval_jitter=settings.interval_jitter,
        startup_splay_s=settings.startup_splay,
        backend=settings.backend,
        labels=settings.labels,
        ca_bundle=settings.ca_bundle,
        health_rules=settings.health_rules,
        kube=kube,
        access=device_access_config(settings, simulated=sim is not None),
    )
    stop = threading.Event()
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_state(config.state_file))
            runner = AgentRunner(config, stop=stop)
        except (AgentError, StateInUse) as exc:
            raise fail(str(exc), 2) from None
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


def device_access_config(settings: AgentSettings, *, simulated: bool) -> DeviceAccessConfig | None:
    """The device access settings when ``device_access`` is on; a simulated host's nodes are regular files."""
    if not settings.device_access:
        return None
    return DeviceAccessConfig(
        dev_root=settings.dev_root,
        mig_minors_file=settings.mig_minors_file,
        groups=tuple(settings.access_groups),
        idle_group=settings.access_idle_group,
        allow_regular_files=simulated,
    )
