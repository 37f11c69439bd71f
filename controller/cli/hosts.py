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

from controller.cli.common import console, fail

app = typer.Typer(help="Hosts: agent identity.", no_args_is_help=True)

ControllerOption = Annotated[
    str, typer.Option("--controller", envvar="GPUFABRIC_CONTROLLER_URL", help="Controller URL")
]
TokenOption = Annotated[str, typer.Option("--token", envvar="GPUFABRIC_TOKEN", help="Admin API token")]


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
    url = f"{controller.rstrip('/')}/v1/hosts/{quote(hostname, safe='')}/credential:reset"
    try:
        response = httpx.post(url, json={"reason": reason}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise fail(f"controller unreachable: {exc}", 3) from None
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('title')}: {body.get('detail')}"
        except ValueError:
            message = response.text[:300]
        raise fail(f"HTTP {response.status_code}: {message}", 2)
    data = response.json()
    if as_json:
        print(json.dumps(data))
        return
    console.print(
        f"host {data['hostname']}: {data['revoked']} credential(s) revoked; next registration: "
        f"{data['next_registration']}",
        highlight=False,
    )
