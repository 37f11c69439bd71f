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
from rich.text import Text

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

# No emoji codes (a PCI bus id such as 00000000:AB:00.0 holds ":AB:") and, when the output is not a terminal,
# no wrapping at 80 columns (URLs and ids stay whole in pipes and logs).
console = Console(emoji=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, emoji=False, width=None if sys.stderr.isatty() else 1000)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    # The message is data, not markup: brackets in it (a label, a URL) are printed as they are.
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
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
