"""`gpufabric-agent labels`: GPU Feature Discovery compatible node labels plus gpufabric's own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import JsonOption, SimOption, SimStateOption, fail, nvml_or_exit, print_json
from agent.discovery import collect_inventory
from agent.labels import format_labels, node_labels, pci_gpu_mode
from agent.sharing import SharingError, load_config_file, select_config
from agent.sharing.config import MigStrategy


def labels(
    sim: SimOption = None,
    sim_state: SimStateOption = None,
    json: JsonOption = False,
    mig_strategy: Annotated[
        MigStrategy | None,
        typer.Option("--mig-strategy", help="none | single | mixed (default: the sharing config's, else none)."),
    ] = None,
    sharing_config: Annotated[
        Path | None, typer.Option("--sharing-config", help="Device-plugin config whose sharing the labels show.")
    ] = None,
    sharing_name: Annotated[str | None, typer.Option("--sharing-name", help="Named config in that file.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output-file", "-o", help="Write key=value lines here (like GFD).")
    ] = None,
) -> None:
    """Compute the node labels for this host: nvidia.com/* as GFD names them, and gpufabric.io/*."""
    config = None
    if sharing_config is not None:
        try:
            _, config = select_config(load_config_file(sharing_config), sharing_name)
        except SharingError as exc:
            raise fail(str(exc)) from None
    with nvml_or_exit(sim, sim_state) as host:
        inventory = collect_inventory(
            hostname=getattr(host, "hostname", None) if host is not None else None, simulated=host is not None
        )
    result = node_labels(
        inventory,
        sharing=config,
        mig_strategy=mig_strategy,
        gpu_mode=None if sim else pci_gpu_mode(inventory),
    )
    if output is not None:
        output.write_text(format_labels(result))
    if json:
        print_json(dict(sorted(result.items())))
    elif output is None:
        typer.echo(format_labels(result), nl=False)
