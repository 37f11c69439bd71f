"""`gpufabric-agent`: the node agent's command line."""

from __future__ import annotations

import typer

from agent.cli import health as _health
from agent.cli import inventory as _inventory
from agent.cli import labels as _labels
from agent.cli import mig as _mig
from agent.cli import run as _run
from agent.cli import sharing as _sharing
from agent.cli import sim as _sim

app = typer.Typer(
    name="gpufabric-agent",
    help="gpufabric node agent: discover GPUs through NVML, manage MIG and sharing, report to the controller.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """gpufabric node agent: discover GPUs through NVML, manage MIG and sharing, report to the controller."""


app.command("inventory")(_inventory.inventory)
# Sub-command groups register below (one line each).
# --- sub-apps ---
app.command("run")(_run.run)
app.add_typer(_sharing.app, name="sharing")
app.add_typer(_health.app, name="health")
app.command("labels")(_labels.labels)
app.add_typer(_mig.app, name="mig")
app.add_typer(_sim.app, name="sim")


def main() -> None:
    app()
