"""`gpufabric-agent health`: per-GPU health (XID, ECC, retired pages, remapping, bus, thermal, power)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli.common import JsonOption, SimOption, SimStateOption, console, err_console, fail, nvml_or_exit, print_json
from agent.health import HealthMonitor, HealthRules, HealthRulesError
from drivers.contract.inventory import GpuHealth

app = typer.Typer(help="GPU health: states, reasons, admin clear and quarantine.")

DEFAULT_STATE_DIR = Path("/var/lib/gpufabric")
StateDirOption = Annotated[
    Path, typer.Option("--state-dir", envvar="GPUFABRIC_STATE_DIR", help="Where the agent keeps its state.")
]
RulesOption = Annotated[Path | None, typer.Option("--rules", help="Health rules YAML (defaults otherwise).")]
_COLOURS = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "quarantined": "magenta"}


def _state_path(state_dir: Path) -> Path | None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if os.access(state_dir, os.W_OK):
        return state_dir / "health-state.json"
    err_console.print(
        f"[yellow]note:[/] {state_dir} is not writable; sticky health states will not survive a restart "
        "(pass --state-dir)",
        highlight=False,
    )
    return None


def _monitor(rules: Path | None, state_dir: Path) -> HealthMonitor:
    try:
        loaded = HealthRules.from_file(rules) if rules else HealthRules()
    except HealthRulesError as exc:
        raise fail(str(exc)) from None
    return HealthMonitor(loaded, state_path=_state_path(state_dir))


def _render(health: dict[str, GpuHealth]) -> None:
    table = Table()
    for col in ("uuid", "state", "reasons"):
        table.add_column(col, overflow="fold")
    for uuid, h in health.items():
        reasons = "\n".join(
            f"{r.code} {escape(f'[{r.severity}]')} since {r.since:%Y-%m-%d %H:%M:%S}: {r.message}" for r in h.reasons
        )
        table.add_row(uuid, f"[{_COLOURS[h.state]}]{h.state}[/]", reasons or "-")
    console.print(table)


def _as_json(health: dict[str, GpuHealth]) -> dict[str, object]:
    return {uuid: h.model_dump(mode="json") for uuid, h in health.items()}


@app.callback(invoke_without_command=True)
def health(
    ctx: typer.Context,
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json: JsonOption = False,
    watch: Annotated[
        float | None, typer.Option("--watch", help="Observe every SECONDS until interrupted.", min=0.1)
    ] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", hidden=True)] = None,
    rules: RulesOption = None,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
) -> None:
    """Observe every GPU once (or repeatedly with --watch) and print its health state and reasons."""
    if ctx.invoked_subcommand is not None:
        return
    monitor = _monitor(rules, state_dir)
    with nvml_or_exit(sim, sim_state):
        try:
            done = 0
            while True:
                result = monitor.observe()
                if json:
                    print_json(_as_json(result))
                else:
                    _render(result)
                done += 1
                if watch is None or (iterations is not None and done >= iterations):
                    break
                time.sleep(watch)
        except KeyboardInterrupt:
            pass
        finally:
            monitor.close()


@app.command("clear")
def clear(
    uuid: Annotated[str, typer.Argument(help="GPU UUID")],
    code: Annotated[str | None, typer.Option("--code", help="Only this reason, e.g. xid-79")] = None,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    json: JsonOption = False,
) -> None:
    """Admin clear of sticky reasons (after a repair, a reset or a false alarm)."""
    monitor = HealthMonitor(state_path=_state_path(state_dir))
    removed = monitor.clear(uuid, code)
    if json:
        print_json({"uuid": uuid, "cleared": removed})
    elif removed:
        console.print(f"cleared {', '.join(removed)} on {uuid}")
    else:
        raise fail(f"nothing to clear on {uuid}" + (f" for {code}" if code else ""))


@app.command("quarantine")
def quarantine(
    uuid: Annotated[str, typer.Argument(help="GPU UUID")],
    message: Annotated[str, typer.Option("--message", "-m", help="Why")] = "quarantined by an admin",
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
) -> None:
    """Quarantine a GPU until `health clear`."""
    HealthMonitor(state_path=_state_path(state_dir)).quarantine(uuid, message)
    console.print(f"{uuid} quarantined")
