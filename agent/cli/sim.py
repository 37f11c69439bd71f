"""`gpufabric-agent sim ...`: drive the NVML simulator out of band (what a real host would do to its GPUs).

These act on the simulator's state file, the way a GPU reset, a crashing job or a failing HBM row act on
real hardware; the agent then sees the effect through NVML like it would on a real host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agent.cli.common import JsonOption, SimStateOption, console, fail, print_json
from drivers.nvml.sim.host import SimulatedHost, SimulatorError
from drivers.nvml.sim.hostspec import HostSpecError
from drivers.nvml.sim.install import bundled_specs, install, uninstall

app = typer.Typer(
    name="sim",
    help="The NVML simulator: list bundled host specs, reset GPUs, inject XIDs, ECC errors and processes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SpecArg = Annotated[str, typer.Option("--sim", envvar="GPUFABRIC_SIM", help="Host spec path or bundled name.")]
GpuArg = Annotated[int, typer.Option("--gpu", min=0, help="GPU index.")]


@contextmanager
def _host(sim: str, sim_state: Path | None) -> Iterator[SimulatedHost]:
    try:
        host = install(sim, state_path=sim_state)
    except HostSpecError as exc:
        raise fail(str(exc), 2) from None
    try:
        yield host
    except (SimulatorError, ValueError, IndexError) as exc:
        raise fail(str(exc), 1) from None
    finally:
        uninstall()


def _act(sim: str, sim_state: Path | None, action: Callable[[SimulatedHost], object], done: str) -> None:
    with _host(sim, sim_state) as host:
        action(host)
    console.print(done, highlight=False)


@app.command("list")
def list_specs(json: JsonOption = False) -> None:
    """List the bundled host specs (use their name with --sim)."""
    specs = bundled_specs()
    if json:
        print_json({name: str(path) for name, path in specs.items()})
        return
    table = Table("name", "description")
    for name, path in specs.items():
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        table.add_row(name, first.removeprefix("#").strip())
    console.print(table)


@app.command("reset-gpu")
def reset_gpu(sim: SpecArg, gpu: GpuArg, sim_state: SimStateOption = None) -> None:
    """Reset a GPU (like `nvidia-smi -r`): a pending MIG mode change takes effect."""
    _act(sim, sim_state, lambda h: h.reset_gpu(gpu), f"GPU {gpu} reset")


@app.command("inject-xid")
def inject_xid(
    sim: SpecArg, gpu: GpuArg, xid: Annotated[int, typer.Option(min=1)], sim_state: SimStateOption = None
) -> None:
    """Queue an XID event; the agent's health watcher receives it through an NVML event set."""
    _act(sim, sim_state, lambda h: h.inject_xid(gpu, xid), f"XID {xid} queued on GPU {gpu}")


@app.command("inject-ecc")
def inject_ecc(
    sim: SpecArg,
    gpu: GpuArg,
    corrected: Annotated[int, typer.Option(min=0)] = 0,
    uncorrected: Annotated[int, typer.Option(min=0)] = 0,
    sim_state: SimStateOption = None,
) -> None:
    """Add ECC errors to a GPU's volatile and aggregate counters."""
    _act(sim, sim_state, lambda h: h.inject_ecc(gpu, corrected, uncorrected), f"ECC errors added on GPU {gpu}")


@app.command("add-process")
def add_process(
    sim: SpecArg,
    gpu: GpuArg,
    pid: Annotated[int, typer.Option(min=1)],
    memory_mib: Annotated[int, typer.Option(min=0)] = 1024,
    gpu_instance: Annotated[int | None, typer.Option(help="GPU instance id (MIG)")] = None,
    sim_state: SimStateOption = None,
) -> None:
    """Pretend a CUDA process runs on a GPU (or on one of its MIG instances)."""
    _act(
        sim,
        sim_state,
        lambda h: h.add_process(gpu, pid, memory_mib, gpu_instance_id=gpu_instance),
        f"process {pid} running on GPU {gpu}",
    )


@app.command("remove-process")
def remove_process(sim: SpecArg, pid: Annotated[int, typer.Option(min=1)], sim_state: SimStateOption = None) -> None:
    """End a simulated process."""
    _act(sim, sim_state, lambda h: h.remove_process(pid), f"process {pid} ended")


@app.command("lose-gpu")
def lose_gpu(sim: SpecArg, gpu: GpuArg, back: bool = False, sim_state: SimStateOption = None) -> None:
    """Make a GPU fall off the bus (NVML then answers GPU_IS_LOST), or bring it back with --back."""
    _act(sim, sim_state, lambda h: h.set_lost(gpu, not back), f"GPU {gpu} {'back' if back else 'lost'}")


@app.command("state-path")
def state_path(sim: SpecArg, sim_state: SimStateOption = None) -> None:
    """Print where the simulator keeps this host's GPU state."""
    with _host(sim, sim_state) as host:
        console.print(str(host.state_path) if host.state_path else "(in memory)", highlight=False)
