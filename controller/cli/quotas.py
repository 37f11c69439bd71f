"""`gpufabric quotas list | show`: per-tenant limits on live slices and what is in use, through the REST API.
Setting limits stays with the API (``PUT /v1/quotas/{tenant}``, docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from controller.cli.common import (
    ControllerOption,
    JsonOption,
    TokenOption,
    api_client,
    checked,
    checked_list,
    print_json,
)
from controller.cli.tables import show, table

app = typer.Typer(help="Quotas: per-tenant limits and usage.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Quotas: per-tenant limits and usage."""


def _limit_rows(quotas: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (q["tenant"], lim["kind"], lim["model"], lim["limit"], lim["in_use"]) for q in quotas for lim in q["limits"]
    ]


@app.command("list")
def list_(as_json: JsonOption = False, controller: ControllerOption = None, token: TokenOption = None) -> None:
    """Every tenant with limits: each limit and its use."""
    with api_client(controller, token) as client:
        quotas = checked_list(client.get("/v1/quotas"), as_json)
    if as_json:
        print_json(quotas)
        return
    show(table(("tenant", "kind", "model", "limit", "in use"), _limit_rows(quotas)))


@app.command("show")
def show_(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="The tenant")],
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """A tenant's limits and its live usage by kind and model (also without limits)."""
    with api_client(controller, token) as client:
        quota = checked(client.get(f"/v1/quotas/{quote(tenant, safe='')}"), as_json)
    if as_json:
        print_json(quota)
        return
    show(
        table(("kind", "model", "limit", "in use"), [row[1:] for row in _limit_rows([quota])], f"limits of {tenant}"),
        table(("kind:model", "in use"), sorted(quota["usage"].items()), f"usage of {tenant}"),
    )
