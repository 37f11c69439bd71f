"""`gpufabric pools list | show`: pools and their policies (MIG layout, sharing, on-demand MIG) through the REST
API. Changing a policy stays with the API (``PUT /v1/pools/{name}/policy``, docs/api.md)."""

from __future__ import annotations

import json
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
from controller.cli.tables import fields, show, table, when

app = typer.Typer(help="Pools: hosts grouped for policy.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Pools: hosts grouped for policy."""


def _mig(policy: dict[str, Any]) -> str | None:
    mig = policy.get("mig") or {}
    selected = mig.get("selected")
    return str(selected) if selected else None


def _sharing(policy: dict[str, Any]) -> str | None:
    config = (policy.get("sharing") or {}).get("config") or {}
    sharing = config.get("sharing") or {}
    modes = [mode for mode in ("timeSlicing", "mps") if sharing.get(mode)]
    return ", ".join(modes) or ("set" if config else None)


@app.command("list")
def list_(as_json: JsonOption = False, controller: ControllerOption = None, token: TokenOption = None) -> None:
    """Pools with their host counts and policies."""
    with api_client(controller, token) as client:
        pools = checked_list(client.get("/v1/pools"), as_json)
    if as_json:
        print_json(pools)
        return
    rows = [
        (p["name"], p["hosts"], _mig(p["policy"]), _sharing(p["policy"]), p["policy"].get("on_demand_mig"),
         p.get("description"), when(p.get("created_at")))
        for p in pools
    ]  # fmt: skip
    show(table(("pool", "hosts", "MIG config", "sharing", "on-demand MIG", "description", "created"), rows))


@app.command("show")
def show_(
    name: Annotated[str, typer.Argument(metavar="POOL", help="The pool's name")],
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """A pool: host count and its whole policy (the MIG and sharing documents as JSON)."""
    with api_client(controller, token) as client:
        pool = checked(client.get(f"/v1/pools/{quote(name, safe='')}"), as_json)
    if as_json:
        print_json(pool)
        return
    policy = pool["policy"]
    show(
        fields(
            [
                ("pool", pool["name"]),
                ("description", pool.get("description")),
                ("hosts", pool["hosts"]),
                ("created", when(pool.get("created_at"))),
                ("MIG config", _mig(policy)),
                ("sharing", _sharing(policy)),
                ("on-demand MIG", policy.get("on_demand_mig")),
                ("policy", json.dumps(policy, indent=2)),
            ]
        )
    )
