"""`gpufabric-agent`: the node agent's command line."""

from __future__ import annotations

import typer

from agent.cli import inventory as _inventory

app = typer.Typer(
    name="gpufabric-agent",
    help="gpufabric node agent: discover GPUs through NVML, manage MIG and sharing, report to the controller.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("inventory")(_inventory.inventory)
# Sub-command groups register below (one line each).
# --- sub-apps ---


def main() -> None:
    app()
