"""`gpufabric validations list|show|run` (also as `gpufabric validate ...`): NCCL validations through the
controller's REST API.

``run`` starts a validation and, with ``--wait``, shows each run's progress until the verdict, then
exits 0 when it passed, 1 when it failed, 3 on error (could not run or not judgeable) and 2 when the
request was refused.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich import box
from rich.live import Live
from rich.table import Table

from controller.cli import tables
from controller.cli.common import (
    ControllerOption,
    JsonOption,
    TokenOption,
    api_client,
    checked,
    checked_list,
    console,
    print_json,
)

app = typer.Typer(help="NCCL validations: run, follow and read verdicts.", no_args_is_help=True)

FINISHED = ("passed", "failed", "error")
EXIT_CODES = {"passed": 0, "failed": 1, "error": 3}


@app.callback()
def _group() -> None:
    """NCCL validations: run, follow and read verdicts."""


def _gbps(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def progress_table(v: dict[str, Any]) -> Table:
    table = Table(
        title=f"validation {v['id']} · {v['request'].get('test', 'all_reduce_perf')} · {v['mode']} · [bold]{v['status']}[/]",
        box=box.SIMPLE_HEAD,
    )
    for column in ("hosts", "run", "expected GB/s", "measured GB/s", "ratio", "wrong", "verdict"):
        table.add_column(column, justify="right" if "GB/s" in column or column in ("ratio", "wrong") else "left")
    for run in v["runs"]:
        verdict = run.get("verdict") or {}
        passed = verdict.get("passed")
        if not verdict:
            text = "-"
        else:
            text = "[green]pass[/]" if passed is True else "[red]fail[/]" if passed is False else "[yellow]n/a[/]"
        ratio = verdict.get("ratio")
        table.add_row(
            ",".join(run["hosts"]) or run["launcher"],
            run["status"],
            _gbps((run.get("expected") or {}).get("busbw_gbps")),
            _gbps(verdict.get("measured_busbw_gbps")),
            "-" if ratio is None else f"{ratio:.0%}",
            str(len(verdict.get("wrong_rows") or [])) if verdict else "-",
            text,
        )
    return table


def print_verdict(v: dict[str, Any]) -> None:
    console.print(progress_table(v))
    colour = {"passed": "green", "failed": "red"}.get(v["status"], "yellow")
    console.print(f"[bold {colour}]{v['status'].upper()}[/] {v.get('message') or ''}", highlight=False)
    for run in v["runs"]:
        rows = run.get("rows") or []
        if not rows:
            continue
        table = Table(title=f"{','.join(run['hosts'])}: largest sizes", box=box.SIMPLE_HEAD)
        for column in ("size (B)", "busbw out", "busbw in", "#wrong"):
            table.add_column(column, justify="right")
        for row in rows[-4:]:
            inp = row.get("in_place") or {}
            out = row["out_of_place"]
            wrong = [w for w in (out.get("wrong"), inp.get("wrong")) if w is not None]
            table.add_row(
                str(row["size_bytes"]),
                _gbps(out["busbw_gbps"]),
                _gbps(inp.get("busbw_gbps")),
                str(max(wrong)) if wrong else "N/A",
            )
        console.print(table)
        console.print(f"  avg busbw (as printed): {_gbps(run.get('avg_busbw_gbps'))} GB/s", highlight=False)


def follow(client: httpx.Client, validation_id: str, interval_s: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    v = checked(client.get(f"/v1/validations/{validation_id}"))
    with Live(progress_table(v), console=console, refresh_per_second=4, transient=True) as live:
        while v["status"] not in FINISHED and time.monotonic() < deadline:
            time.sleep(interval_s)
            v = checked(client.get(f"/v1/validations/{validation_id}"))
            live.update(progress_table(v))
    return v


@app.command("run")
def run(
    hosts: Annotated[str | None, typer.Option("--hosts", help="Comma-separated hosts under test")] = None,
    nodegroup: Annotated[str | None, typer.Option("--nodegroup", help="EKS nodegroup under test")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Backend of the nodegroup")] = None,
    test: Annotated[str, typer.Option("--test", help="nccl-tests binary")] = "all_reduce_perf",
    multi_node: Annotated[bool, typer.Option("--multi-node", help="One mpirun across all hosts")] = False,
    min_bytes: Annotated[str, typer.Option("--min-bytes", "-b")] = "8",
    max_bytes: Annotated[str, typer.Option("--max-bytes", "-e")] = "128M",
    iters: Annotated[int, typer.Option("--iters", "-n")] = 20,
    expected: Annotated[float | None, typer.Option("--expected-busbw", help="Override expected GB/s")] = None,
    pass_ratio: Annotated[float | None, typer.Option("--pass-ratio", help="Share of expected to pass")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until the verdict")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls")] = 2.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up waiting after this many seconds")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validation as JSON")] = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Start an NCCL validation (and with --wait follow it to the verdict)."""
    body: dict[str, Any] = {"test": test, "min_bytes": min_bytes, "max_bytes": max_bytes, "iters": iters}
    if hosts:
        body["hosts"] = [h.strip() for h in hosts.split(",") if h.strip()]
        body["mode"] = "multi-node" if multi_node else "single-node"
    if nodegroup:
        body.update(nodegroup=nodegroup, backend=backend)
    if expected is not None:
        body["expected_busbw_gbps"] = expected
    if pass_ratio is not None:
        body["pass_ratio"] = pass_ratio
    with api_client(controller, token) as client:
        v = checked(client.post("/v1/validations", json=body), as_json)
        if not as_json:
            console.print(f"validation [bold]{v['id']}[/] {v['status']}", highlight=False)
        if wait:
            v = follow(client, v["id"], interval, timeout) if not as_json else _poll(client, v["id"], interval, timeout)
    if as_json:
        print_json(v)
    elif wait:
        print_verdict(v)
    if wait:
        raise typer.Exit(EXIT_CODES.get(v["status"], 3) if v["status"] in FINISHED else 3)


def _poll(client: httpx.Client, validation_id: str, interval_s: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    v = checked(client.get(f"/v1/validations/{validation_id}"))
    while v["status"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(interval_s)
        v = checked(client.get(f"/v1/validations/{validation_id}"))
    return v


@app.command("show")
def show(
    validation_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """A validation's status, runs, largest-size rows and verdict with evidence."""
    with api_client(controller, token) as client:
        v = checked(client.get(f"/v1/validations/{quote(validation_id, safe='')}"), as_json)
    if as_json:
        print_json(v)
    else:
        print_verdict(v)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status", help="pending | running | passed | failed | error")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only validations that ran on this host")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Recent validations, newest first."""
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("status", status), ("host", host)) if v})
    with api_client(controller, token) as client:
        items = checked_list(client.get("/v1/validations", params=params), as_json)
    if as_json:
        print_json(items)
        return
    rows = [
        (v["id"], v["status"], v["test"], v["mode"], v["purpose"], v["hosts"], tables.when(v["created_at"]),
         tables.when(v.get("finished_at")))
        for v in items
    ]  # fmt: skip
    tables.show(tables.table(("id", "status", "test", "mode", "purpose", "hosts", "created", "finished"), rows))
