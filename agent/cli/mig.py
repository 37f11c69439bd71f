"""`gpufabric-agent mig ...`: validate, plan and apply mig-parted configs.

Exit codes: 0 done (or nothing to do), 1 blocked by running processes or an NVML failure,
2 invalid input (file, config name, device, profile), 3 waiting for a GPU reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli.common import JsonOption, SimOption, SimStateOption, console, fail, nvml_or_exit, print_json
from agent.cli.inventory import mig_profiles
from agent.mig.apply import MigApplyReport, converge_mig, plan_from_nvml
from agent.mig.config import MigConfigError, MigPartedConfig, load_mig_config
from agent.mig.model import LayoutEntry, MigPlan, MigValidationError, Operation

EXIT_BLOCKED = 1
EXIT_INVALID = 2
EXIT_PENDING_RESET = 3

app = typer.Typer(
    name="mig",
    help="Declarative MIG: read NVIDIA mig-parted configs and converge GPUs on one of them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigFileOption = Annotated[
    Path,
    typer.Option("--config", "-f", help="mig-parted config file (raw, ConfigMap, or multi-document YAML)."),
]
SelectOption = Annotated[str, typer.Option("--select", "-s", help="Name of the config to apply (a mig-configs key).")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Also destroy MIG instances that have running processes when needed.")
]


def _load(path: Path) -> MigPartedConfig:
    try:
        return load_mig_config(path)
    except MigConfigError as exc:
        raise fail(str(exc), EXIT_INVALID) from None


def _invalid(config: MigPartedConfig, exc: MigValidationError) -> typer.Exit:
    return fail(f"{config.source}: {exc}", EXIT_INVALID)


def _devices_text(devices: object) -> str:
    return "all" if devices == "all" else ",".join(str(i) for i in devices)  # type: ignore[attr-defined]


def _layout_text(layout: list[LayoutEntry]) -> str:
    if not layout:
        return "(no MIG instances)"
    parts = []
    for e in layout:
        tag = "new" if e.gpu_instance_id is None else f"GI {e.gpu_instance_id}"
        extra = ", busy" if e.busy else ""
        parts.append(f"{e.profile}@{e.placement.start}:{e.placement.size} ({tag}{extra})")
    return "  ".join(parts)


@app.command()
def validate(config: ConfigFileOption, json_output: JsonOption = False) -> None:
    """Check a mig-parted config file and list every config by name with its entries."""
    parsed = _load(config)
    if json_output:
        print_json(parsed.to_json())
        return
    console.print(f"{len(parsed.configs)} MIG configs in {escape(str(config))}", highlight=False, soft_wrap=True)
    table = Table()
    for column in ("config", "entry", "devices", "device filter", "MIG"):
        table.add_column(column, no_wrap=column != "device filter")
    table.add_column("MIG devices")
    for name, entries in parsed.configs.items():
        for position, entry in enumerate(entries, start=1):
            table.add_row(
                name if position == 1 else "",
                str(position),
                _devices_text(entry.devices),
                ", ".join(entry.device_filter) if entry.device_filter else "-",
                "enabled" if entry.mig_enabled else "disabled",
                ", ".join(f"{count} x {profile}" for profile, count in entry.mig_devices.items()) or "-",
            )
    console.print(table)


def _op_line(number: int, op: Operation, result: str | None = None, detail: str | None = None) -> str:
    text = f"  {number:>2}. {op.op:<13} {op.nvml}"
    if result and result != "ok":
        text += f"  [{result}]"
    if detail:
        text += f"  ({detail})"
    return text


def _print_plan(plan: MigPlan) -> None:
    console.print(f"MIG plan for config [bold]{escape(plan.config)}[/] from {escape(plan.source)}", highlight=False)
    for gpu in plan.gpus:
        console.print(
            f"\nGPU {gpu.index} {escape(gpu.name)} {escape(f'[MIG {gpu.mig_state}]')}: [bold]{gpu.status}[/]",
            highlight=False,
            soft_wrap=True,
        )
        if gpu.reason:
            console.print(f"  {gpu.reason}", highlight=False, markup=False, soft_wrap=True)
        for blocker in gpu.blockers:
            console.print(f"  [red]blocked:[/] {escape(blocker)}", highlight=False, soft_wrap=True)
        for number, op in enumerate(gpu.operations, start=1):
            console.print(_op_line(number, op), highlight=False, markup=False, soft_wrap=True)
        if gpu.mig_enabled:
            console.print(f"  layout: {_layout_text(gpu.layout)}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def plan(
    config: ConfigFileOption,
    select: SelectOption,
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the exact NVML operations `mig apply` would run per GPU and the layout that results."""
    parsed = _load(config)
    try:
        parsed.select(select)
    except MigConfigError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    with nvml_or_exit(sim, sim_state):
        try:
            result = plan_from_nvml(parsed, select)
        except MigValidationError as exc:
            raise _invalid(parsed, exc) from None
    if json_output:
        print_json(result)
    else:
        _print_plan(result)
    if result.blocked:
        raise typer.Exit(EXIT_BLOCKED)


def _print_report(report: MigApplyReport) -> None:
    console.print(f"MIG apply of config [bold]{escape(report.config)}[/] from {escape(report.source)}", highlight=False)
    for gpu in report.gpus:
        colour = {"untouched": "green", "changed": "green", "pending-reset": "yellow"}.get(gpu.status, "red")
        console.print(
            f"\nGPU {gpu.index} {escape(gpu.name)} {escape(f'[MIG {gpu.mig_state}]')}: [bold {colour}]{gpu.status}[/]",
            highlight=False,
            soft_wrap=True,
        )
        if gpu.reason and gpu.status != "changed":
            console.print(f"  {gpu.reason}", highlight=False, markup=False, soft_wrap=True)
        for blocker in gpu.blockers:
            console.print(f"  [red]blocked:[/] {escape(blocker)}", highlight=False, soft_wrap=True)
        for number, op in enumerate(gpu.operations, start=1):
            console.print(_op_line(number, op, op.result, op.detail), highlight=False, markup=False, soft_wrap=True)
        if gpu.mig_state == "enabled":
            console.print(f"  layout: {_layout_text(gpu.layout)}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def apply(
    config: ConfigFileOption,
    select: SelectOption,
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    force: ForceOption = False,
    json_output: JsonOption = False,
) -> None:
    """Converge the GPUs on a config, then report per GPU what was done and what it now holds."""
    parsed = _load(config)
    try:
        parsed.select(select)
    except MigConfigError as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    with nvml_or_exit(sim, sim_state):
        try:
            report = converge_mig(parsed, select, force=force)
        except MigValidationError as exc:
            raise _invalid(parsed, exc) from None
    if json_output:
        print_json(report)
    else:
        _print_report(report)
    if report.blocked or report.failed:
        raise typer.Exit(EXIT_BLOCKED)
    if report.pending_reset:
        raise typer.Exit(EXIT_PENDING_RESET)


# --- `mig profiles` -------------------------------------------------------------------------
app.command("profiles")(mig_profiles)
