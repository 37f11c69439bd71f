"""`gpufabric-agent inventory` and `gpufabric-agent mig profiles`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli.common import (
    JsonOption,
    SimOption,
    SimStateOption,
    console,
    err_console,
    fail,
    nvml_or_exit,
    print_json,
)
from agent.discovery import (
    gpu_handles,
    gpu_instance_profiles,
    mig_mode,
    possible_placements,
    profile_display_name,
)
from agent.health import HealthMonitor
from agent.node_inventory import node_inventory
from agent.sharing import SharingError, load_config_file, select_config
from drivers.contract.inventory import Gpu, Inventory

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml


def _mig_cell(gpu: Gpu) -> str:
    if not gpu.mig.capable:
        return "-"
    if gpu.mig.state == "pending-reset":
        target = "enable" if gpu.mig.pending else "disable"
        return f"[yellow]pending-reset ({target} after a GPU reset)[/]"
    if not gpu.mig.current:
        return "disabled"
    layout = ", ".join(f"{m.profile}@{m.placement.start}" for m in gpu.mig_instances)
    return f"enabled: {layout or 'no instances'}"


def _health_cell(gpu: Gpu) -> str:
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "quarantined": "magenta"}[gpu.health.state]
    reasons = "; ".join(r.code for r in gpu.health.reasons)
    return f"[{colour}]{gpu.health.state}[/]" + (f" ({reasons})" if reasons else "")


def render_inventory(inv: Inventory) -> None:
    console.print(
        f"[bold]{inv.host.hostname}[/]{' (simulated)' if inv.host.simulated else ''}  "
        f"driver {inv.driver_version}  CUDA {inv.cuda_driver_version}  {len(inv.gpus)} GPU(s)"
    )
    table = Table(show_lines=False)
    for col in ("#", "name", "uuid", "bus id", "memory", "cc", "MIG", "nvlink", "health"):
        table.add_column(col, overflow="fold")
    for g in inv.gpus:
        table.add_row(
            str(g.index),
            g.name,
            g.uuid,
            g.pci.bus_id,
            f"{g.memory_total_mib} MiB",
            g.compute_capability,
            _mig_cell(g),
            f"{g.nvlink.links_active} x v{g.nvlink.version}" if g.nvlink.links_active else "-",
            _health_cell(g),
        )
    console.print(table)
    if inv.topology.matrix and len(inv.gpus) > 1:
        topo = Table(title="topology", show_header=True)
        topo.add_column("")
        for g in inv.gpus:
            topo.add_column(f"GPU{g.index}")
        for g, row in zip(inv.gpus, inv.topology.matrix, strict=True):
            topo.add_row(f"GPU{g.index}", *row)
        console.print(topo)


SharingConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--sharing-config",
        exists=True,
        dir_okay=False,
        help="Device-plugin config (time-slicing / MPS) the host runs; the slice offers follow it.",
    ),
]
SharingNameOption = Annotated[
    str | None, typer.Option("--sharing-name", help="Config name when the file holds several (a ConfigMap).")
]


def inventory(
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json: JsonOption = False,
    sharing_config: SharingConfigOption = None,
    sharing_name: SharingNameOption = None,
) -> None:
    """Discover the GPUs on this host through NVML and print the inventory (with health and slice offers)."""
    sharing = None
    if sharing_config is not None:
        try:
            _, sharing = select_config(load_config_file(sharing_config), sharing_name)
        except SharingError as exc:
            raise fail(str(exc), 2) from None
    with nvml_or_exit(sim, sim_state) as host:
        monitor = HealthMonitor()
        try:
            inv = node_inventory(
                hostname=host.hostname if host is not None else None,
                simulated=host is not None,
                monitor=monitor,
                sharing=sharing,
            )
        finally:
            monitor.close()
    if json:
        print_json(inv)
    else:
        render_inventory(inv)


def profiles_of(handle: Any) -> list[dict[str, Any]]:
    """GPU-instance profiles as `nvidia-smi mig -lgip` / `-lgipp` list them, read through NVML."""
    result = []
    for info in gpu_instance_profiles(handle):
        result.append(
            {
                "name": profile_display_name(info),
                "id": int(info.id),
                "slices": int(info.sliceCount),
                "memory_mib": int(info.memorySizeMB),
                "max_instances": int(info.instanceCount),
                "sm_count": int(info.multiprocessorCount),
                "placements": [p.model_dump() for p in possible_placements(handle, int(info.id))],
            }
        )
    return result


def mig_profiles(sim: SimOption = None, sim_state: SimStateOption = None, json: JsonOption = False) -> None:
    """List the MIG GPU-instance profiles of each MIG-enabled GPU (IDs, slices, memory, placements)."""
    out: list[dict[str, Any]] = []
    skipped: list[str] = []
    with nvml_or_exit(sim, sim_state):
        for index, handle in enumerate(gpu_handles()):
            name = pynvml.nvmlDeviceGetName(handle)
            mode = mig_mode(handle)
            if not mode.capable:
                skipped.append(f"GPU {index} ({name}) does not support MIG")
                continue
            if not mode.current:
                hint = " (enable pending a GPU reset)" if mode.pending else ""
                skipped.append(
                    f"GPU {index} ({name}): MIG is disabled{hint}; NVML lists profiles only with MIG enabled "
                    "(enable it with `gpufabric-agent mig apply` and a config with mig-enabled: true)"
                )
                continue
            out.append({"index": index, "product": name, "profiles": profiles_of(handle)})
    for line in skipped:
        err_console.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    if not out and skipped:
        raise fail("no GPU on this host has MIG enabled", 1)
    if json:
        print_json(out)
        return
    for gpu in out:
        table = Table(title=f"GPU {gpu['index']}: {gpu['product']}")
        for col in ("profile", "ID", "slices", "memory", "SMs", "max", "placements {start}:size"):
            table.add_column(col)
        for p in gpu["profiles"]:
            starts = ",".join(str(pl["start"]) for pl in p["placements"])
            size = p["placements"][0]["size"] if p["placements"] else "-"
            table.add_row(
                p["name"], str(p["id"]), str(p["slices"]), f"{p['memory_mib']} MiB", str(p["sm_count"]),
                str(p["max_instances"]), f"{{{starts}}}:{size}",
            )  # fmt: skip
        console.print(table)
