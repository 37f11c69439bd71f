"""Each host's validation state and what it means for placement.

- ``validated``: the last validation of the host passed.
- ``quarantined``: the last validation failed. The host's ``admin_state`` is set to ``quarantined``
  (the same switch as ``POST /v1/hosts/{host}/quarantine``), so placement gives it no leases.
- ``held``: a burn-in validation is pending (a host registered after burn-in was enabled). Its
  ``admin_state`` is set to ``drained``: no new leases until the burn-in passes.
- ``unvalidated``: never validated (or burn-in off). Placeable unless a request requires validated hosts.

This module changes ``admin_state`` only from ``active`` and records the change (``admin_change``),
so a later pass restores only what it changed itself, never an admin's own drain or quarantine.

The placement engine sees this through :func:`engine_validation` (its ``Host.validation`` field:
``validated | unvalidated | failed``) and the admin state; after every verdict the app's lease service reloads
the judged hosts into its placement index (``progress.reconcile``'s ``hosts_changed``), and other replicas see the
change through the host change feed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.fleet.states import set_host_admin_state
from controller.store.models import Host, Pool
from controller.validation.models import HostValidationState, ValidationPolicy

EngineValidation = Literal["validated", "unvalidated", "failed"]
GLOBAL_SCOPE = "global"
DEFAULT_PASS_RATIO = 0.8


def pool_scope(pool: str) -> str:
    return f"pool:{pool}"


def engine_validation(state: str) -> EngineValidation:
    return {"validated": "validated", "quarantined": "failed"}.get(state, "unvalidated")  # type: ignore[return-value]


def engine_host_state(host: Host) -> str:
    """The placement engine's ``HostState`` for a host row (reachability, then the admin's decision)."""
    if host.status == "unreachable":
        return "unreachable"
    if host.admin_state in ("drained", "quarantined"):
        return host.admin_state
    return "ready"


def effective_policy(session: Session, host: Host | None) -> dict[str, Any]:
    """Global policy overlaid with the host's pool policy (fields set on the pool win)."""
    scopes = [GLOBAL_SCOPE]
    if host is not None and host.pool is not None:
        scopes.append(pool_scope(host.pool.name))
    out: dict[str, Any] = {
        "expected_busbw_gbps": None,
        "pass_ratio": None,
        "burn_in": False,
        "burn_in_since": None,
        "burn_in_request": {},
        "burn_in_auto_run": True,
        "scope": GLOBAL_SCOPE,
    }
    for scope in scopes:
        row = session.get(ValidationPolicy, scope)
        if row is None:
            continue
        for key in ("expected_busbw_gbps", "pass_ratio", "burn_in", "burn_in_since"):
            value = getattr(row, key)
            if value is not None:
                out[key] = value
                out["scope"] = scope
        if row.burn_in is not None:
            out["burn_in_request"] = row.burn_in_request
            out["burn_in_auto_run"] = row.burn_in_auto_run
    return out


def _state_row(session: Session, host: Host) -> HostValidationState:
    row = session.get(HostValidationState, host.id)
    if row is None:
        row = HostValidationState(host_id=host.id, state="unvalidated", evidence={})
        session.add(row)
    return row


def needs_burn_in(session: Session, host: Host) -> bool:
    policy = effective_policy(session, host)
    since = policy["burn_in_since"]
    if not policy["burn_in"] or since is None:
        return False
    registered = host.registered_at if host.registered_at.tzinfo else host.registered_at.replace(tzinfo=UTC)
    return bool(registered >= since)


def hold_for_burn_in(session: Session, host: Host) -> bool:
    """Hold a host that must pass burn-in first (call when it registers). True when it is now held."""
    row = session.get(HostValidationState, host.id)
    if row is not None or not needs_burn_in(session, host):
        return False
    row = _state_row(session, host)
    row.state = "held"
    row.reason = "burn-in: held until an NCCL validation passes"
    row.updated_at = datetime.now(UTC)
    if host.admin_state == "active":
        set_host_admin_state(host, "drained")
        row.admin_change = "drained"
    return True


def record_verdict(session: Session, host: Host, passed: bool, validation_id: str, evidence: dict[str, Any]) -> str:
    """Set the host's state from a verdict; returns the new state."""
    row = _state_row(session, host)
    now = datetime.now(UTC)
    if passed:
        if row.admin_change is not None and host.admin_state == row.admin_change:
            set_host_admin_state(host, "active")
        row.admin_change = None
        row.state = "validated"
        row.reason = f"validation {validation_id} passed"
    else:
        if host.admin_state == "active" or (row.admin_change == "drained" and host.admin_state == "drained"):
            set_host_admin_state(host, "quarantined")
            row.admin_change = "quarantined"
        row.state = "quarantined"
        reasons = evidence.get("reasons") or ["failed"]
        row.reason = f"validation {validation_id} failed: " + "; ".join(str(r) for r in reasons)
    row.validation_id = validation_id
    row.evidence = evidence
    row.updated_at = now
    return row.state


def validation_state_of(session: Session, host_ids: Iterable[int]) -> dict[int, str]:
    """``{host id: unvalidated | held | validated | quarantined}`` for the given store host ids.

    Hosts without a row are ``held`` when burn-in applies to them (registered after it was enabled),
    else ``unvalidated``.
    """
    ids = list(host_ids)
    if not ids:
        return {}
    states = {
        r.host_id: r.state
        for r in session.scalars(select(HostValidationState).where(HostValidationState.host_id.in_(ids)))
    }
    missing = [i for i in ids if i not in states]
    if missing:
        for host in session.scalars(select(Host).where(Host.id.in_(missing))):
            states[host.id] = "held" if needs_burn_in(session, host) else "unvalidated"
    return {i: states.get(i, "unvalidated") for i in ids}


def placeable(state: str) -> bool:
    return state not in ("held", "quarantined")


def pool_names(session: Session) -> set[str]:
    return set(session.scalars(select(Pool.name)))
