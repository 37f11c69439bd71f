"""`gpufabric host reset-credential`: host identity through the controller's REST API.

``reset-credential`` revokes a host's agent credential (every replica refuses it within ``change_poll_s``) and
opens the host to one registration: the next registration with the agent-bootstrap token takes it over. Exit
codes: 0 done, 2 refused (unknown host, bad token), 3 controller unreachable.
"""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

import httpx
import typer

from controller.cli.common import ControllerOption, TokenOption, api_client, checked, console, fail

app = typer.Typer(help="Hosts: agent identity.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Hosts: agent identity."""


@app.command("reset-credential")
def reset_credential(
    hostname: Annotated[str, typer.Argument(help="The host whose agent credential is revoked")],
    controller: ControllerOption,
    token: TokenOption,
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the audit log")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the controller's answer as JSON")] = False,
) -> None:
    """Revoke HOSTNAME's agent credential; its next registration with the bootstrap token takes it over."""
    try:
        with api_client(controller, token) as client:
            response = client.post(f"/v1/hosts/{quote(hostname, safe='')}/credential:reset", json={"reason": reason})
    except httpx.HTTPError as exc:
        raise fail(f"controller unreachable: {exc}", 3) from None
    data = checked(response)
    if as_json:
        print(json.dumps(data))
        return
    console.print(
        f"host {data['hostname']}: {data['revoked']} credential(s) revoked; next registration: "
        f"{data['next_registration']}",
        highlight=False,
    )
