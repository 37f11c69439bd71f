"""`gpufabric nccl parse FILE [--json]`: read an nccl-tests log the way a validation would.

Exit codes: 2 when the file cannot be read (one line on stderr). With `--json` a readable file
always exits 0 and the verdict is in `ok`/`errors`; the table view exits 1 when `ok` is false so
shell scripts can gate on it (`gpufabric nccl parse run.log && echo fabric ok`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from controller.cli.common import console, fail
from drivers.nccl import NcclMeasurement, NcclResult, parse_nccl_output, peak_busbw

app = typer.Typer(help="nccl-tests output: parse and inspect results.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """nccl-tests output: parse and inspect results."""


@app.command("parse")
def parse(
    file: Annotated[str, typer.Argument(metavar="FILE", help="nccl-tests log (stdout of *_perf); '-' reads stdin")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the parsed result as JSON (issue 8 shape plus a 'details' key); always exits 0."
        ),
    ] = False,
) -> None:
    """Parse an nccl-tests log: rows, out-of-bounds, average bus bandwidth, failures."""
    text = _read_text(file)
    result = parse_nccl_output(text)
    if as_json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
        return
    _print_table(result)
    if not result.ok:
        raise typer.Exit(1)


def _read_text(file: str) -> str:
    if file == "-":
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        path = Path(file)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise fail(f"{file}: no such file", 2) from None
        except IsADirectoryError:
            raise fail(f"{file}: is a directory, not an nccl-tests log", 2) from None
        except OSError as exc:
            raise fail(f"{file}: cannot read: {exc.strerror or exc}", 2) from None
        name = file
    if b"\x00" in data:
        raise fail(f"{name}: binary data, not an nccl-tests text log", 2)
    # Logs pass through launchers and terminals; a stray byte must not hide the table.
    return data.decode("utf-8", errors="replace")


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:g} {unit}" if unit == "B" else f"{value:.4g} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - loop always returns


def _wrong(m: NcclMeasurement | None) -> str:
    if m is None:
        return ""
    if m.wrong is None:
        return "N/A"
    return f"[bold red]{m.wrong}[/]" if m.wrong else "0"


def _rows_table(result: NcclResult) -> Table:
    """Type/redop/root go to the title when every row shares them, so the table fits 80 columns."""
    described = {
        "type": lambda row: row.type,
        "redop": lambda row: row.redop or "",
        "root": lambda row: "" if row.root is None else str(row.root),
    }
    varying = [name for name, get in described.items() if len({get(row) for row in result.rows}) > 1]
    shared = [
        f"{name} {value}" for name, get in described.items() if name not in varying and (value := get(result.rows[0]))
    ]
    title = "time in us, bandwidth in GB/s" + (f"; {', '.join(shared)}" if shared else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 1), collapse_padding=True)
    table.add_column("size", justify="right", no_wrap=True)
    for name in varying:
        table.add_column(name, no_wrap=True)
    for prefix in ("oop", "ip"):
        for column in ("time", "algbw", "busbw", "#wrong"):
            table.add_column(f"{prefix} us" if column == "time" else column, justify="right", no_wrap=True)
    for row in result.rows:
        cells = [_human_size(row.size_bytes), *(described[name](row) for name in varying)]
        for m in (row.out_of_place, row.in_place):
            if m is None:
                cells += ["", "", "", ""]
            else:
                cells += [f"{m.time_us:g}", f"{m.algbw_gbps:.2f}", f"{m.busbw_gbps:.2f}", _wrong(m)]
        table.add_row(*cells)
    return table


def _print_table(result: NcclResult) -> None:
    details = result.details
    facts = [
        f"test: {result.test or 'unknown'}",
        f"NCCL: {result.nccl_version or 'unknown'}",
        f"ranks: {result.ranks if result.ranks is not None else 'unknown'}"
        + (" (inferred from counts)" if details.ranks_source == "inferred_from_counts" else ""),
    ]
    if details.nccl_tests_version:
        facts.append(f"nccl-tests: {details.nccl_tests_version}")
    console.print("  ".join(facts), highlight=False)
    if details.devices:
        hosts = sorted({d.host for d in details.devices})
        names = sorted({d.name for d in details.devices})
        console.print(f"devices: {len(details.devices)} on {', '.join(hosts)} ({', '.join(names)})", highlight=False)

    if result.rows:
        console.print(_rows_table(result))

    avg = details.avg_busbw_printed if result.avg_busbw_gbps is not None else "unknown (no Avg line)"
    oob = "unknown" if result.out_of_bounds is None else str(result.out_of_bounds)
    peak = peak_busbw(result)
    console.print(
        f"avg bus bandwidth: {avg}  out of bounds: {oob}  peak busbw: {'-' if peak is None else f'{peak:.2f}'}",
        highlight=False,
    )
    for warning in details.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for error in result.errors:
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
    console.print("[bold green]OK[/]" if result.ok else "[bold red]FAILED[/]")
