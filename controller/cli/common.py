"""Options and output helpers shared by controller commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.text import Text

from controller.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="GPUFABRIC_CONFIG", help="YAML or TOML settings file"),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides GPUFABRIC_DATABASE_URL and the config file"),
]
# Commands that talk to a running controller over its REST API.
ControllerOption = Annotated[
    str, typer.Option("--controller", envvar="GPUFABRIC_CONTROLLER_URL", help="Controller URL")
]
TokenOption = Annotated[str, typer.Option("--token", envvar="GPUFABRIC_TOKEN", help="Admin API token")]

# No emoji codes (a PCI bus id such as 00000000:AB:00.0 holds ":AB:") and, when the output is not a terminal,
# no wrapping at 80 columns (URLs and ids stay whole in pipes and logs).
console = Console(emoji=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, emoji=False, width=None if sys.stderr.isatty() else 1000)


def fail(message: str, code: int = 1) -> typer.Exit:
    # The message is data, not markup: brackets in it (a label, a URL) are printed as they are.
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def api_client(controller: str, token: str) -> httpx.Client:
    """A client for the controller's REST API with the token."""
    return httpx.Client(base_url=controller.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30)


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a successful answer; a problem+json refusal becomes a one-line error (exit 2)."""
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('title')}: {body.get('detail')}"
        except ValueError:
            message = response.text[:300]
        raise fail(f"HTTP {response.status_code}: {message}", 2)
    data: dict[str, Any] = response.json()
    return data


def settings_or_exit(config: Path | None, database_url: str | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    try:
        return load_settings(config, **values)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"settings: {exc}", 2) from None
