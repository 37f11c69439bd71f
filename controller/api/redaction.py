"""What tenants are shown of the fleet: counts and reasons, never other hosts' names or which GPUs are busy.

Admins get placement's full explanation (examples naming hosts and GPUs, the nearest host, where a dry run would
go). A tenant gets the same refusal with ``filters[].reasons`` (the examples without their host or GPU index)
instead of ``examples``, ``nearest_fit`` without ``host``, and a dry-run plan by backend with the slices it would
get, not the host and GPUs. The lease a tenant holds names its own hosts (it needs them to use the lease), but not
the hosts tried before it (``placement.failed_attempts``: counts and reasons; reasons say "another host").
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel

from controller.auth.tokens import Principal, Role
from controller.leases.errors import LeaseError, LeaseRefused

# Allocation members that say what a slice is; the others (device, placement, mig_uuid) say where it is.
_SLICE_FIELDS = ("kind", "model", "units", "profile", "vgpu_type", "create")


def sees_hosts(principal: Principal) -> bool:
    return principal.role is Role.admin


def refusal_for(principal: Principal, exc: LeaseError) -> dict[str, Any]:
    """The problem members of a lease refusal as ``principal`` may see them."""
    if sees_hosts(principal) or not isinstance(exc, LeaseRefused):
        return exc.extensions
    return exc.refusal.extensions(hosts=False)


def plan_for(principal: Principal, plan: dict[str, Any]) -> dict[str, Any]:
    """A dry-run answer as ``principal`` may see it."""
    if sees_hosts(principal):
        return plan
    out = dict(plan)
    out["nodes"] = [
        {
            "backend": node.get("backend"),
            "scores": node.get("scores"),
            "allocations": [{k: a[k] for k in _SLICE_FIELDS if k in a} for a in node.get("allocations", [])],
        }
        for node in plan.get("nodes", [])
    ]
    out["actions"] = [{"action": a.get("action"), "profile": a.get("profile")} for a in plan.get("actions", [])]
    return out


_M = TypeVar("_M", bound=BaseModel)
OTHER_HOST = "another host"


def _other_hosts(state: str, placement: dict[str, Any], allocations: list[dict[str, Any]]) -> set[str]:
    """Hosts the lease's placement record names that are not the lease's own (a failed lease holds none)."""
    named = set(placement.get("tried_hosts", []))
    for attempt in placement.get("failed_attempts", []):
        named.update(attempt.get("hosts", []))
    own = set() if state == "failed" else {a.get("host") for a in allocations}
    return named - own


def _scrub(text: str | None, hosts: set[str]) -> str | None:
    if not text or not hosts:
        return text
    names = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])(?:{names})(?![\w.-])", OTHER_HOST, text)


def lease_for(principal: Principal, lease: _M) -> _M:
    """A lease as ``principal`` may see it: a tenant's own lease keeps its own hosts, but the hosts tried before
    (``placement.failed_attempts``, ``tried_hosts``) become counts, and reasons name them as "another host"; a
    lease that failed after trying hosts shows its allocations as slices, without host or device."""
    if sees_hosts(principal):
        return lease
    placement: dict[str, Any] = getattr(lease, "placement", None) or {}
    if "tried_hosts" not in placement and "failed_attempts" not in placement:
        return lease
    hosts = _other_hosts(getattr(lease, "state", ""), placement, getattr(lease, "allocations", []))
    shown = {k: v for k, v in placement.items() if k not in ("tried_hosts", "failed_attempts")}
    if "tried_hosts" in placement:
        shown["tried_hosts_count"] = len(placement["tried_hosts"])
    if "failed_attempts" in placement:
        shown["failed_attempts"] = [
            {"hosts": len(a.get("hosts", [])), "reason": _scrub(a.get("reason", ""), hosts)}
            for a in placement["failed_attempts"]
        ]
    update: dict[str, Any] = {"placement": shown}
    if getattr(lease, "state", "") == "failed":  # it holds nothing: where it was tried is not the tenant's to know
        shown.update({k: v for k, v in plan_for(principal, shown).items() if k in ("nodes", "actions")})
        update["allocations"] = [{k: a[k] for k in _SLICE_FIELDS if k in a} for a in getattr(lease, "allocations", [])]
    for field in ("reason", "failure_reason"):
        if hasattr(lease, field):
            update[field] = _scrub(getattr(lease, field), hosts)
    transitions = getattr(lease, "transitions", None)
    if transitions:
        update["transitions"] = [t.model_copy(update={"reason": _scrub(t.reason, hosts)}) for t in transitions]
    return lease.model_copy(update=update)
