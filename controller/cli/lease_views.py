"""How `gpufabric lease` shows leases, dry-run plans and refusals (human output; --json prints the API's)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from controller.cli.common import err_console
from controller.cli.tables import fields, show, table, text, when


def describe_request(request: dict[str, Any]) -> str:
    """``2 x gpu H100`` / ``2 nodes x (8 x gpu), same-az`` from a request document."""
    parts = []
    for s in request.get("slices") or []:
        what = str(s.get("kind"))
        for key in ("profile", "vgpu_type"):
            if s.get(key):
                what += f":{s[key]}"
        if s.get("model"):
            what += f" {s['model']}"
        if s.get("min_memory_gib"):
            what += f" >= {s['min_memory_gib']:g} GiB"
        parts.append(f"{s.get('count', 1)} x {what}")
    per_node = " + ".join(parts)
    nodes = request.get("nodes", 1)
    return per_node if nodes == 1 else f"{nodes} nodes x ({per_node}), {request.get('topology', 'any')}"


def hosts_of(lease: dict[str, Any]) -> list[str]:
    return sorted({a["host"] for a in lease.get("allocations") or [] if a.get("host")})


def show_leases(leases: list[dict[str, Any]]) -> None:
    rows = [
        (
            lease["id"],
            lease["tenant"],
            lease["state"],
            lease["backend"],
            hosts_of(lease),
            describe_request(lease.get("request") or {}),
            when(lease["created_at"]),
            when(lease.get("expires_at")),
        )
        for lease in leases
    ]
    show(table(("id", "tenant", "state", "backend", "hosts", "request", "created", "expires"), rows))


def show_lease(lease: dict[str, Any]) -> None:
    result = lease.get("result") or {}
    show(
        fields(
            [
                ("lease", lease["id"]),
                ("tenant", lease["tenant"]),
                ("state", lease["state"]),
                ("reason", lease.get("reason")),
                ("backend", lease.get("backend")),
                ("request", describe_request(lease.get("request") or {})),
                ("CUDA_VISIBLE_DEVICES", result.get("cuda_visible_devices")),
                ("created", when(lease.get("created_at"))),
                ("expires", when(lease.get("expires_at"))),
                ("idempotency key", lease.get("idempotency_key")),
            ]
        )
    )
    allocations = [
        (
            a.get("host"),
            a.get("device"),
            a.get("kind"),
            a.get("model"),
            a.get("units"),
            a.get("profile"),
            a.get("mig_uuid"),
        )
        for a in lease.get("allocations") or []
    ]
    if allocations:
        show(table(("host", "device", "kind", "model", "units", "profile", "MIG device"), allocations, "allocations"))
    nodes = [
        (n.get("host"), n.get("cuda_visible_devices"), ", ".join(f"{k}={v}" for k, v in (n.get("env") or {}).items()))
        for n in result.get("nodes") or []
    ]
    if nodes:
        show(table(("host", "CUDA_VISIBLE_DEVICES", "env"), nodes, "what the backend provisioned"))
    show_access(lease["id"], lease.get("access"))
    transitions = [
        (when(t["at"]), t.get("from_state"), t["to_state"], t.get("reason")) for t in lease.get("transitions") or []
    ]
    if transitions:
        show(table(("at", "from", "to", "reason"), transitions, "transitions"))


def show_access(lease_id: str, access: dict[str, Any] | None) -> None:
    """What the lease hands over (``access``), without printing a credential: a kubeconfig's token stays in
    ``--json`` and ``gpufabric lease kubeconfig``."""
    if not access:
        return
    kind = access.get("kind")
    if kind == "kubernetes":
        show(
            fields(
                [
                    ("API server", access.get("server")),
                    ("namespace", access.get("namespace")),
                    ("service account", access.get("service_account")),
                    ("token expires", when(access.get("token_expires_at"))),
                    ("kubeconfig", f"gpufabric lease kubeconfig {lease_id} -o FILE"),
                ],
                "access (Kubernetes)",
            )
        )
    elif kind == "ssh":
        show(fields([("user", access.get("user")), ("SSH keys", len(access.get("ssh_keys") or []))], "access (SSH)"))
        machines = [
            (
                m.get("host"),
                m.get("addresses") or m.get("mac_addresses"),
                m.get("host_key_fingerprint"),
                m.get("console_url"),
            )
            for m in access.get("machines") or []
        ]
        show(table(("host", "addresses", "host key", "console"), machines))
    else:  # agent-managed hosts: the per-lease Unix group and the device nodes it may open
        grants = access.get("hosts") or [access]
        rows = [
            (
                g.get("host"),
                "yes" if g.get("enforced") else "no",
                g.get("unix_group"),
                g.get("gid"),
                g.get("device_nodes"),
            )
            for g in grants
        ]
        show(table(("host", "enforced", "group", "gid", "device nodes"), rows, "access (device nodes)"))
    if access.get("how_to"):
        show(text(f"how to: {access['how_to']}"))


def show_plan(plan: dict[str, Any]) -> None:
    """A dry run's answer: where the request would go, nothing claimed."""
    candidates = plan.get("candidates") or {}
    show(
        fields(
            [
                ("request", plan.get("request")),
                ("fits", plan.get("fits")),
                ("policy", plan.get("policy")),
                ("domain", plan.get("domain")),
                (
                    "candidates",
                    f"{text(candidates.get('hosts'))} hosts, {text(candidates.get('devices'))} devices"
                    f", {text(candidates.get('fitting_hosts'))} fitting",
                ),
                ("claimed", plan.get("claimed")),
            ]
        )
    )
    rows = [
        (node.get("host") or "-", node.get("backend"), a.get("device") or "-", a.get("kind"), a.get("model"),
         a.get("units"), a.get("profile"), "create" if a.get("create") else "")
        for node in plan.get("nodes") or []
        for a in node.get("allocations") or []
    ]  # fmt: skip
    show(table(("host", "backend", "device", "kind", "model", "units", "profile", "MIG"), rows, "would place"))
    actions = [(a.get("action"), a.get("host"), a.get("device"), a.get("profile")) for a in plan.get("actions") or []]
    if actions:
        show(table(("action", "host", "device", "profile"), actions, "actions"))
    show_funnel(plan.get("filters") or [])


def show_funnel(filters: list[dict[str, Any]]) -> None:
    rows = [
        (f.get("filter"), f.get("removed_hosts"), f.get("removed_devices"), f.get("examples") or f.get("reasons") or "")
        for f in filters
    ]
    if rows:
        show(table(("filter", "removed hosts", "removed devices", "for example"), rows, "filters"))


def explain_refusal(problem: dict[str, Any]) -> None:
    """Why a request was refused (no-capacity, quota-exceeded), under the one-line error, on stderr."""
    lines: list[str] = []
    if problem.get("request"):
        lines.append(f"  request: {problem['request']}")
    if problem.get("quota"):
        lines.append(f"  quota: {problem['quota']}")
    candidates = problem.get("candidates")
    if isinstance(candidates, dict):
        lines.append(f"  candidates: {text(candidates.get('hosts'))} hosts, {text(candidates.get('devices'))} devices")
    for f in problem.get("filters") or []:
        if isinstance(f, dict):
            # Admins get examples naming hosts; tenants the same reasons without them.
            examples = "; ".join(str(e) for e in f.get("examples") or f.get("reasons") or [])
            lines.append(
                f"  filter {f.get('filter')}: removed {text(f.get('removed_hosts'))} hosts, "
                f"{text(f.get('removed_devices'))} devices" + (f" (e.g. {examples})" if examples else "")
            )
    nearest = problem.get("nearest_fit")
    if isinstance(nearest, dict):
        available = ", ".join(f"{k}: {v}" for k, v in (nearest.get("available") or {}).items())
        satisfied = nearest.get("satisfied")
        share = f"{satisfied:.0%}" if isinstance(satisfied, int | float) else "?"
        where = f"{nearest['host']} " if nearest.get("host") else ""
        lines.append(f"  nearest fit: {where}({share} satisfied; available {available or '-'})")
        lines.extend(f"    missing: {missing}" for missing in nearest.get("missing") or [])
    for line in lines:
        err_console.print(Text(line), highlight=False, soft_wrap=True)
