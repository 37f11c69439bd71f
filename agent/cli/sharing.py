"""`gpufabric-agent sharing validate|apply|show`: NVIDIA device-plugin configs (time-slicing, MPS)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli.common import JsonOption, SimOption, SimStateOption, console, fail, nvml_or_exit, print_json
from agent.sharing import (
    MpsSettings,
    SharingError,
    apply_sharing,
    load_config_file,
    read_state,
    select_config,
    sharing_status,
)
from agent.sharing.apply import DEFAULT_STATE_DIR
from agent.sharing.config import DevicePluginConfig

app = typer.Typer(
    help="Time-slicing and MPS: NVIDIA k8s-device-plugin configs, applied on this host.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Device-plugin config: raw YAML or a ConfigMap with named configs."),
]
StateDirOption = Annotated[
    Path,
    typer.Option("--state-dir", envvar="GPUFABRIC_STATE_DIR", help="Where the agent keeps its state."),
]


def _summary(config: DevicePluginConfig) -> dict[str, Any]:
    replicated = config.replicated
    return {
        "strategy": config.strategy,
        "mig_strategy": config.mig_strategy,
        "rename_by_default": replicated.rename_by_default if replicated else None,
        "fail_requests_greater_than_one": (
            (config.strategy == "mps")
            if replicated is not None and replicated.fail_requests_greater_than_one is None
            else (replicated.fail_requests_greater_than_one if replicated else None)
        ),
        "resources": [
            {"name": r.name, "replicas": r.replicas, "devices": r.devices, "rename": r.rename}
            for r in (replicated.resources if replicated else [])
        ],
    }


def validate(config: ConfigOption, json: JsonOption = False) -> None:
    """Check a device-plugin config the way the device plugin would; list every named config."""
    try:
        configs = load_config_file(config)
    except SharingError as exc:
        raise fail(str(exc)) from None
    result = {"configs": {name: _summary(cfg) for name, cfg in configs.items()}}
    if json:
        print_json(result)
        return
    for name, summary in result["configs"].items():
        resources = ", ".join(f"{r['name']} x{r['replicas']} ({r['devices']})" for r in summary["resources"]) or "-"
        console.print(f"[bold]{name}[/]: {summary['strategy']}  {resources}", highlight=False)
    console.print(f"[green]valid[/]: {len(configs)} config(s)")


def apply(
    config: ConfigOption,
    name: Annotated[str | None, typer.Option("--name", help="Which named config to apply.")] = None,
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json: JsonOption = False,
    kubernetes: Annotated[
        bool,
        typer.Option("--kubernetes", help="Inside Kubernetes: the device plugin runs MPS; only set compute modes."),
    ] = False,
    write_config: Annotated[
        Path | None, typer.Option("--write-config", help="Write the selected config here (outside Kubernetes).")
    ] = None,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    mps_start: Annotated[str | None, typer.Option("--mps-start", help="MPS daemon start command.")] = None,
    mps_stop: Annotated[
        str | None, typer.Option("--mps-stop", help="MPS daemon stop command ('quit' is sent on stdin).")
    ] = None,
    mps_pipe_dir: Annotated[Path | None, typer.Option("--mps-pipe-dir")] = None,
    mps_log_dir: Annotated[Path | None, typer.Option("--mps-log-dir")] = None,
    mps_memory_limit: Annotated[
        int | None, typer.Option("--mps-memory-limit-mib", help="Per-client memory; default GPU memory / replicas.")
    ] = None,
    mps_threads: Annotated[
        int | None, typer.Option("--mps-thread-percentage", help="Per-client SM share; default 100 / replicas.")
    ] = None,
) -> None:
    """Converge this host on a sharing config: compute modes, config file, MPS control daemon."""
    settings = MpsSettings()
    if mps_start:
        settings.start_command = shlex.split(mps_start)
    if mps_stop:
        settings.stop_command = shlex.split(mps_stop)
    if mps_pipe_dir:
        settings.pipe_directory = mps_pipe_dir
    if mps_log_dir:
        settings.log_directory = mps_log_dir
    settings.memory_limit_mib = mps_memory_limit
    settings.active_thread_percentage = mps_threads
    try:
        chosen_name, chosen = select_config(load_config_file(config), name)
    except SharingError as exc:
        raise fail(str(exc)) from None
    with nvml_or_exit(sim, sim_state):
        try:
            report = apply_sharing(
                chosen,
                config_name=chosen_name,
                kubernetes=kubernetes,
                config_path=write_config,
                state_dir=state_dir,
                mps=settings,
            )
        except SharingError as exc:
            raise fail(str(exc)) from None
    if json:
        print_json(report)
        return
    console.print(f"[bold]{chosen_name}[/]: {report.strategy}", highlight=False)
    for change in report.compute_mode_changes:
        console.print(f"  GPU {change.gpu_index} {change.uuid}: compute mode {change.before} -> {change.after}")
    if not report.compute_mode_changes:
        console.print("  compute modes unchanged")
    if report.config_written:
        console.print(f"  wrote {report.config_written}")
    if not kubernetes:
        console.print(f"  MPS control daemon: {report.mps_daemon}")


def show(
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json: JsonOption = False,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
) -> None:
    """Show compute modes now and what the last `sharing apply` left in force."""
    try:
        state = read_state(state_dir)
    except SharingError as exc:
        raise fail(str(exc)) from None
    with nvml_or_exit(sim, sim_state):
        status = sharing_status()
    if json:
        print_json({"applied": state, "devices": [s.model_dump() for s in status]})
        return
    console.print(
        f"last applied: {state.get('config_name', '-')} ({state.get('strategy', 'none')}); "
        f"MPS daemon {'running' if (state.get('mps_daemon') or {}).get('running') else 'not running'}",
        highlight=False,
    )
    table = Table()
    for col in ("#", "uuid", "MIG", "compute mode"):
        table.add_column(col, overflow="fold")
    for s in status:
        modes = "\n".join(f"{u}: {m}" if s.mig_enabled else m for u, m in s.compute_modes.items()) or "-"
        table.add_row(str(s.index), s.uuid, "enabled" if s.mig_enabled else "-", modes)
    console.print(table)


app.command("validate")(validate)
app.command("apply")(apply)
app.command("show")(show)
