"""What tenants are shown of the fleet: counts and reasons, never other hosts' names or which GPUs are busy.

Admins get placement's full explanation (examples naming hosts and GPUs, the nearest host, where a dry run would
go). A tenant gets the same refusal with ``filters[].reasons`` (the examples without their host or GPU index)
instead of ``examples``, ``nearest_fit`` without ``host``, and a dry-run plan by backend with the slices it would
get, not the host and GPUs. The lease a tenant holds names its own hosts (it needs them to use the lease).
"""

from __future__ import annotations

from typing import Any

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
