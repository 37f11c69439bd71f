"""Options and output helpers shared by controller commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controller.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="GPUFABRIC_CONFIG", help="YAML or TOML settings file"),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides GPUFABRIC_DATABASE_URL and the config file"),
]

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(config: Path | None, database_url: str | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    try:
        return load_settings(config, **values)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"settings: {exc}", 2) from None
