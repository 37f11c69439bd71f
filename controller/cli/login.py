"""`gpufabric login | logout | whoami`: keep a controller URL and API token for the REST commands.

``login`` checks the token against the controller (``GET /v1/whoami``) before it writes anything, then saves
both in the CLI's config file (mode 0600; see ``controller.cli.credentials``). The token comes from ``--token``
or ``GPUFABRIC_TOKEN``, else from standard input when that is not a terminal (``... | gpufabric login``), else
from a prompt that does not echo it. ``logout`` deletes the file.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from controller.cli import credentials
from controller.cli.common import (
    DEFAULT_CONTROLLER,
    REFUSED,
    ControllerOption,
    JsonOption,
    TokenOption,
    api_client,
    checked,
    checked_url,
    fail,
    print_json,
    saved_login,
)
from controller.cli.tables import fields, say, show


def _token_from_stdin_or_prompt() -> str:
    if not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
        if not token:
            raise fail("no token on standard input (pass --token, or pipe the token in)", REFUSED)
        return token
    token = typer.prompt("API token", hide_input=True).strip()
    if not token:
        raise fail("no token given", REFUSED)
    return token


def login(
    controller: ControllerOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a controller URL and API token and save them for the other commands (file mode 0600)."""
    if not controller:
        default = saved_login().controller or DEFAULT_CONTROLLER
        controller = typer.prompt("Controller URL", default=default) if sys.stdin.isatty() else default
    url = checked_url(controller)
    secret = token.strip() if token else _token_from_stdin_or_prompt()
    with api_client(url, secret) as client:
        who = checked(client.get("/v1/whoami"), as_json)
    try:
        path = credentials.save(url, secret)
    except OSError as exc:
        raise fail(f"cannot write {credentials.config_path()}: {exc.strerror or exc}", 1) from None
    if as_json:
        print_json(who)
        return
    tenant = f" (tenant {who['tenant']})" if who.get("tenant") else ""
    say(f"logged in to {url} as {who['role']} {who['name']}{tenant}; saved to {path} (mode 0600)")


def logout(as_json: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON")] = False) -> None:
    """Forget the saved controller URL and token (delete the config file)."""
    path = credentials.config_path()
    try:
        removed = credentials.remove(path)
    except OSError as exc:
        raise fail(f"cannot remove {path}: {exc.strerror or exc}", 1) from None
    if as_json:
        print_json({"removed": str(removed) if removed else None})
    elif removed:
        say(f"removed {removed}")
    else:
        say(f"not logged in (no {path})")


def whoami(controller: ControllerOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Who the token is (role, name, tenant) on which controller."""
    with api_client(controller, token) as client:
        who = checked(client.get("/v1/whoami"), as_json)
        url = str(client.base_url).rstrip("/")
    if as_json:
        print_json(who)
        return
    show(
        fields(
            [
                ("controller", url),
                ("role", who["role"]),
                ("name", who["name"]),
                ("tenant", who.get("tenant")),
                ("host", who.get("host")),
            ]
        )
    )
