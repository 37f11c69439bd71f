"""Options and error handling shared by agent commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from drivers.nvml.session import NvmlUnavailable, open_nvml

SimOption = Annotated[
    str | None,
    typer.Option(
        "--sim",
        envvar="GPUFABRIC_SIM",
        help="Use the NVML simulator with this host spec (a YAML path or a bundled name such as h100-8x).",
    ),
]
SimStateOption = Annotated[
    Path | None,
    typer.Option(
        "--sim-state",
        envvar="GPUFABRIC_SIM_STATE",
        help="Where the simulator keeps GPU state (default: next to the spec).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def nvml_or_exit(sim: str | None, sim_state: Path | None) -> Iterator[Any]:
    """Open NVML (real or simulated); on failure print one line and exit 2, never a traceback."""
    try:
        ctx = open_nvml(sim, sim_state)
        host = ctx.__enter__()
    except NvmlUnavailable as exc:
        raise fail(str(exc), 2) from None
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise fail(f"host spec {sim!r}: {exc}", 2) from None
    try:
        yield host
    except BaseException:
        if not ctx.__exit__(*sys.exc_info()):
            raise
    else:
        ctx.__exit__(None, None, None)


def print_json(data: BaseModel | dict[str, Any] | list[Any]) -> None:
    if isinstance(data, BaseModel):
        sys.stdout.write(data.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
