"""`gpufabric hosts list | show | reset-credential` (also as `gpufabric host ...`): hosts through the REST API.

``list`` and ``show`` read the inventory (``GET /v1/hosts``, ``GET /v1/hosts/{host}``); ``reset-credential``
revokes a host's agent credential (every replica refuses it within ``change_poll_s``) and opens the host to
one registration: the next registration with the agent-bootstrap token takes it over. Exit codes: 0 done,
2 refused (unknown host, bad token), 3 controller unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from controller.cli.common import (
    ControllerOption,
    JsonOption,
    TokenOption,
    api_client,
    checked,
    checked_list,
    print_json,
)
from controller.cli.tables import fields, say, show, table, when

app = typer.Typer(help="Hosts: inventory and agent identity.", no_args_is_help=True)

HostArgument = Annotated[str, typer.Argument(metavar="HOST", help="The host's name")]


@app.callback()
def _group() -> None:
    """Hosts: inventory and agent identity."""


def _path(hostname: str) -> str:
    return f"/v1/hosts/{quote(hostname, safe='')}"


@app.command("list")
def list_(
    backend: Annotated[str | None, typer.Option("--backend", help="Only this backend's hosts")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only this pool's hosts")] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="registered | ready | unreachable, or active | drained | quarantined"),
    ] = None,
    health: Annotated[str | None, typer.Option("--health", help="e.g. healthy, degraded, failed")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Hosts with a GPU of this model (NVML, short or family name)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 500,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    as_json: JsonOption = False,
    controller: ControllerOption = None,
    token: TokenOption = None,
) -> None:
    """Hosts in the inventory, by name."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    filters = {"backend": backend, "pool": pool, "state": state, "health": health, "model": model}
    params.update({k: v for k, v in filters.items() if v})
    with api_client(controller, token) as client:
        hosts = checked_list(client.get("/v1/hosts", params=params), as_json)
    if as_json:
        print_json(hosts)
        return
    rows = [
        (h["hostname"], h.get("backend"), h.get("pool"), h["status"], h["admin_state"], h["health"], h["gpus"],
         h.get("models"), when(h.get("last_seen")))
        for h in hosts
    ]  # fmt: skip
    show(table(("host", "backend", "pool", "status", "admin", "health", "GPUs", "models", "last seen"), rows))


@app.command("show")
def show_(
    hostname: HostArgument, as_json: JsonOption = False, controller: ControllerOption = None, token: TokenOption = None
) -> None:
    """A host: its GPUs (PCI ids, health, MIG instances), desired state and whether the agent applied it."""
    with api_client(controller, token) as client:
        host = checked(client.get(_path(hostname)), as_json)
    if as_json:
        print_json(host)
        return
    desired = host.get("desired") or {}
    applied = host.get("applied") or {}
    mig = desired.get("mig") or {}
    show(
        fields(
            [
                ("host", host["hostname"]),
                ("backend", host.get("backend")),
                ("pool", host.get("pool")),
                ("status", host["status"]),
                ("admin state", host["admin_state"]),
                ("health", host["health"]),
                ("agent", host.get("agent_version")),
                ("simulated", host.get("simulated")),
                ("registered", when(host.get("registered_at"))),
                ("last seen", when(host.get("last_seen"))),
                ("labels", host.get("labels")),
                ("desired MIG config", mig.get("selected")),
                ("desired sharing", "set" if desired.get("sharing") else None),
                ("applied", f"{'ok' if applied['ok'] else 'failed'}: {applied['message']}" if applied else None),
                ("converged", host.get("converged")),
            ]
        )
    )
    devices = [
        (d["index"], d["uuid"], d["model"], f"{d['memory_mib']} MiB", d["pci_bus_id"], d["health"], d["admin_state"],
         d["mig_mode"], [f"{m['profile']} {m.get('uuid') or '(pending)'}" for m in d.get("mig_instances") or []])
        for d in host.get("devices") or []
    ]  # fmt: skip
    show(
        table(
            ("#", "uuid", "model", "memory", "PCI bus id", "health", "admin", "MIG", "MIG instances"), devices, "GPUs"
        )
    )


@app.command("reset-credential")
def reset_credential(
    hostname: Annotated[str, typer.Argument(help="The host whose agent credential is revoked")],
    controller: ControllerOption = None,
    token: TokenOption = None,
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the audit log")] = "",
    as_json: JsonOption = False,
) -> None:
    """Revoke HOSTNAME's agent credential; its next registration with the bootstrap token takes it over."""
    with api_client(controller, token) as client:
        data = checked(client.post(f"{_path(hostname)}/credential:reset", json={"reason": reason}), as_json)
    if as_json:
        print_json(data)
        return
    say(
        f"host {data['hostname']}: {data['revoked']} credential(s) revoked; next registration: {data['next_registration']}"
    )
