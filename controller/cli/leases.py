"""`gpufabric lease create | list | show | kubeconfig | wait | release`: a tenant's GPU slices through the REST API.

``create`` sends the request language (docs/placement.md) built from ``--slice`` options and/or ``--file``;
``--dry-run`` asks ``POST /v1/placements:dry-run`` where it would go instead. A refusal (409 no-capacity,
403 quota-exceeded) prints the one-line error and then why: the filters that removed candidates and the
nearest fit. A lease that failed at once (409 lease-failed) exits 1 like a failed wait. ``wait`` long-polls
(``GET /v1/leases/{id}?wait=N``) until the lease is ready (exit 0), failed or released (1), or ``--timeout``
passes (4). Refusals exit 2, an unreachable or failing controller 3 (``controller.cli.common``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
import yaml
from rich.text import Text

from controller.cli.common import (
    ControllerOption,
    JsonOption,
    TokenOption,
    api_client,
    checked,
    checked_list,
    err_console,
    fail,
    print_json,
    request_timeout,
)
from controller.cli.lease_requests import SLICE_EXAMPLE, request_body
from controller.cli.lease_views import explain_refusal, show_lease, show_leases, show_plan

app = typer.Typer(help="Leases: ask for GPU slices, follow them, release them.", no_args_is_help=True)

READY = "ready"
GONE = ("failed", "released")
NOT_READY_EXIT = 1
TIMED_OUT_EXIT = 4

LeaseId = Annotated[str, typer.Argument(metavar="LEASE", help="The lease id")]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Admins: the tenant (a tenant token acts for its own tenant)")
]
IntervalOption = Annotated[
    float,
    typer.Option("--interval", min=0.0, help="At least this many seconds between two answers that saw no change"),
]
# Seconds one long-poll asks the controller to hold the answer (it allows at most 60).
LONG_POLL_S = 30.0
LEASE_FAILED = "https://gpufabric.dev/problems/lease-failed"
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0.0, help="Give up waiting after this many seconds")]


@app.callback()
def _group() -> None:
    """Leases: ask for GPU slices, follow them, release them."""


def _path(lease_id: str) -> str:
    return f"/v1/leases/{quote(lease_id, safe='')}"


def wait_for(
    client: httpx.Client,
    lease_id: str,
    until: tuple[str, ...],
    interval_s: float,
    timeout_s: float,
    progress: bool,
) -> dict[str, Any]:
    """Long-poll the lease until its state is one of ``until`` or the timeout passes; the last answer either way.
    Each change of state or reason is a line on stderr when ``progress``. The controller holds each request until
    the lease changes (``?wait=``); an answer that saw no change (the hold ran out, or an older controller that
    does not hold) is followed by a pause of ``interval_s``."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[str, str] | None = None
    hold = 0.0
    while True:
        params = {"wait": f"{hold:g}"} if hold > 0 else None
        lease = checked(client.get(_path(lease_id), params=params, timeout=hold + request_timeout()))
        now = (lease["state"], lease["reason"])
        changed = now != seen
        if progress and changed:
            reason = f" ({lease['reason']})" if lease["reason"] else ""
            err_console.print(Text(f"lease {lease_id}: {lease['state']}{reason}"), highlight=False, soft_wrap=True)
        seen = now
        left = deadline - time.monotonic()
        if lease["state"] in until or left <= 0:
            return lease
        if not changed:
            time.sleep(min(interval_s, left))
            left = deadline - time.monotonic()
        hold = max(0.0, min(LONG_POLL_S, left))


def finish_wait(lease: dict[str, Any], timeout_s: float, as_json: bool) -> None:
    """Print the lease and end with the exit code its state means."""
    if as_json:
        print_json(lease)
    else:
        show_lease(lease)
    if lease["state"] == READY:
        return
    if lease["state"] in GONE:
        raise fail(f"lease {lease['id']} is {lease['state']}: {lease['reason']}", NOT_READY_EXIT)
    raise fail(f"lease {lease['id']} is still {lease['state']} after {timeout_s:g} s (--timeout)", TIMED_OUT_EXIT)


def _failed_lease(response: httpx.Response) -> dict[str, Any] | None:
    """The lease of a 409 ``lease-failed`` answer (stored, but failed before the controller answered)."""
    if response.status_code != 409:
        return None
    try:
        problem = response.json()
    except ValueError:
        return None
    if (
        not isinstance(problem, dict)
        or problem.get("type") != LEASE_FAILED
        or not isinstance(problem.get("lease"), dict)
    ):
        return None
    lease: dict[str, Any] = problem["lease"]
    return lease


@app.command("create")
def create(
    slices: Annotated[
        list[str] | None,
        typer.Option("--slice", "-s", help=f"What each node gets, repeatable: {SLICE_EXAMPLE}; keys as in the API"),
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="A JSON request document (- for stdin); options override it")
    ] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", min=1, help="Distinct hosts, each gets all slices")] = None,
    topology: Annotated[
        str | None,
        typer.Option(
            "--topology",
            help="same-host | same-network-node-layer-3|2|1 | same-placement-group | same-aggregate | same-az | "
            "same-region | any",
        ),
    ] = None,
    backends: Annotated[list[str] | None, typer.Option("--backend", help="Backend id or kind, repeatable")] = None,
    regions: Annotated[list[str] | None, typer.Option("--region", help="Region, repeatable")] = None,
    azs: Annotated[list[str] | None, typer.Option("--az", help="Availability zone, repeatable")] = None,
    require_validated: Annotated[
        bool, typer.Option("--require-validated", help="Only hosts whose last NCCL validation passed")
    ] = False,
    policy: Annotated[str | None, typer.Option("--policy", help="pack | spread")] = None,
    duration: Annotated[str | None, typer.Option("--duration", help="Seconds or ISO 8601 (PT8H)")] = None,
    tenant: TenantOption = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="A retry with the same key returns the same lease")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Where it would go; claims nothing")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Then wait until the lease is ready or failed")] = False,
    interval: IntervalOption = 1.0,
    timeout: TimeoutOption = 600.0,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Ask for GPU slices: a lease (or, with --dry-run, the plan)."""
    body = request_body(
        file,
        slices or [],
        nodes=nodes,
        topology=topology,
        backends=backends,
        regions=regions,
        azs=azs,
        require_validated=require_validated,
        policy=policy,
        duration_s=duration,
    )
    params = {"tenant": tenant} if tenant else {}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with api_client(controller, token) as client:
        if dry_run:
            plan = checked(client.post("/v1/placements:dry-run", json=body, params=params), as_json, explain_refusal)
            print_json(plan) if as_json else show_plan(plan)
            return
        response = client.post("/v1/leases", json=body, params=params, headers=headers)
        failed = _failed_lease(response)
        if failed is not None:
            finish_wait(failed, timeout, as_json)
        lease = checked(response, as_json, explain_refusal)
        if wait and lease["state"] not in (READY, *GONE):
            lease = wait_for(client, lease["id"], (READY, *GONE), interval, timeout, progress=not as_json)
    if wait:
        finish_wait(lease, timeout, as_json)
    elif as_json:
        print_json(lease)
    else:
        show_lease(lease)


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option("--state", help="Only leases in this state")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Admins: only this tenant's leases")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Leases, newest first: a tenant's own, or every tenant's for an admin."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    params.update({k: v for k, v in (("state", state), ("tenant", tenant)) if v})
    with api_client(controller, token) as client:
        leases = checked_list(client.get("/v1/leases", params=params), as_json)
    print_json(leases) if as_json else show_leases(leases)


@app.command("show")
def show(
    lease_id: LeaseId, as_json: JsonOption = False, controller: ControllerOption = None, token: TokenOption = None
) -> None:
    """A lease: state, allocations, what the backend provisioned, every transition."""
    with api_client(controller, token) as client:
        lease = checked(client.get(_path(lease_id)), as_json)
    print_json(lease) if as_json else show_lease(lease)


@app.command("kubeconfig")
def kubeconfig(
    lease_id: LeaseId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file (mode 0600); default: stdout")
    ] = None,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """The kubeconfig of a ready EKS lease: its namespace's ServiceAccount token, that namespace as the context."""
    with api_client(controller, token) as client:
        lease = checked(client.get(_path(lease_id)))
    access = lease.get("access") or {}
    if access.get("kind") != "kubernetes" or not access.get("kubeconfig"):
        why = (
            f"it is {lease['state']}"
            if lease["state"] != READY
            else f"its {lease.get('backend')} backend hands out none"
        )
        raise fail(f"lease {lease_id} has no kubeconfig: {why}")
    document = yaml.safe_dump(access["kubeconfig"], sort_keys=False)
    if output is None:
        typer.echo(document, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(document)
    os.chmod(output, 0o600)  # an existing file keeps its old mode through O_CREAT
    err_console.print(
        f"wrote {output} (namespace {access.get('namespace')}); use: KUBECONFIG={output} kubectl get pods"
    )


@app.command("wait")
def wait(
    lease_id: LeaseId,
    interval: IntervalOption = 1.0,
    timeout: TimeoutOption = 600.0,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Wait until the lease is ready (exit 0), failed or released (1), or the timeout passes (4)."""
    with api_client(controller, token) as client:
        lease = wait_for(client, lease_id, (READY, *GONE), interval, timeout, progress=not as_json)
    finish_wait(lease, timeout, as_json)


@app.command("release")
def release(
    lease_id: LeaseId,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another replica is still releasing it, wait until it is released")
    ] = False,
    interval: IntervalOption = 1.0,
    timeout: TimeoutOption = 600.0,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Release a lease: its capacity returns. Releasing a released lease changes nothing."""
    with api_client(controller, token) as client:
        lease = checked(client.delete(_path(lease_id)), as_json)
        if wait and lease["state"] not in GONE:
            lease = wait_for(client, lease_id, GONE, interval, timeout, progress=not as_json)
    if as_json:
        print_json(lease)
    else:
        show_lease(lease)
    if wait and lease["state"] not in GONE:
        raise fail(f"lease {lease_id} is still {lease['state']} after {timeout:g} s (--timeout)", TIMED_OUT_EXIT)
    if lease["state"] == "failed":
        raise fail(f"lease {lease_id} failed while releasing: {lease['reason']}", NOT_READY_EXIT)
