"""`gpufabric offers`: what the caller's tenant may ask for now (``GET /v1/offers``), by backend and region."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.cli.common import ControllerOption, JsonOption, TokenOption, api_client, checked, print_json
from controller.cli.tables import show, table


def _variant(offer: dict[str, Any]) -> str:
    name = offer.get("profile") or offer.get("vgpu_type") or ""
    return f"{name} (on demand)" if offer.get("on_demand") else name


def offers(
    kind: Annotated[str | None, typer.Option("--kind", help="gpu | mig | timeslice | mps | vgpu")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only models whose name contains this")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Admins: as this tenant (its quotas)")] = None,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """What your tenant may request now: free units per backend, region, kind and model, within your quotas."""
    params = {k: v for k, v in (("kind", kind), ("model", model), ("tenant", tenant)) if v}
    with api_client(controller, token) as client:
        catalog = checked(client.get("/v1/offers", params=params), as_json)
    if as_json:
        print_json(catalog)
        return
    rows = [
        (o["kind"], o["model"], _variant(o), o["backend"], o["region"], o["free"], o["hosts"], o["max_per_host"],
         "-" if o["quota_left"] is None else o["quota_left"], o["requestable"])
        for o in catalog["offers"]
    ]  # fmt: skip
    columns = (
        "kind",
        "model",
        "profile/type",
        "backend",
        "region",
        "free",
        "hosts",
        "per host",
        "quota left",
        "you may ask",
    )
    show(table(columns, rows, f"offers for {catalog['tenant']}"))
