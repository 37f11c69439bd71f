"""`gpufabric`: the controller's command line."""

from __future__ import annotations

import typer

from controller.cli import admin as _admin
from controller.cli import demo as _demo
from controller.cli import eks as _eks
from controller.cli import hosts as _hosts
from controller.cli import nccl as _nccl
from controller.cli import server as _server
from controller.cli import validate as _validate

app = typer.Typer(
    name="gpufabric",
    help="gpufabric: one GPU fabric over OpenStack and AWS EKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(_server.app, name="controller")
app.add_typer(_admin.app, name="admin")
app.command("demo")(_demo.demo)
# Sub-command groups register below (one line each).
# --- sub-apps ---
app.add_typer(_eks.app, name="eks")
app.add_typer(_hosts.app, name="host")
app.add_typer(_nccl.app, name="nccl")
app.add_typer(_validate.app, name="validate")


def main() -> None:
    app()
