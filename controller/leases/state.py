"""The lease state machine: one table of allowed transitions; every transition is stored.

::

    requested -> placing -> provisioning -> ready -> releasing -> released
                    |   ^        |  \\____________________/^         |
                    |   +--------+  (cancel while provisioning)      |
                    v   (try the next candidate)                     v
                  failed       failed                              failed

``failed`` carries a reason. Anything not in :data:`TRANSITIONS` raises :class:`IllegalTransition`.

A lease in a :data:`TRANSITIONAL` state always has a ``deadline`` and, while a controller instance is working on
it, an ``owner`` (``None``: resting until something outside acts, e.g. an agent creating a MIG instance). Leaving
for ``ready`` or a terminal state clears both. ``controller.leases.recovery`` finishes what a crashed owner left.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from controller.store.lease_states import HOLDING, STATES, TERMINAL, TRANSITIONAL, LeaseState
from controller.store.models import Lease, LeaseTransition

__all__ = ["HOLDING", "STATES", "TERMINAL", "TRANSITIONAL", "IllegalTransition", "LeaseState", "check", "transition"]

TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    "requested": frozenset({"placing"}),
    "placing": frozenset({"provisioning", "failed"}),
    # provisioning -> releasing: the tenant releases a lease still waiting for its MIG instance.
    # provisioning -> placing: the backend could not use these hosts (e.g. No valid host); place it again.
    "provisioning": frozenset({"ready", "failed", "releasing", "placing"}),
    "ready": frozenset({"releasing"}),
    "releasing": frozenset({"released", "failed"}),
    "released": frozenset(),
    "failed": frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, lease_id: str, current: str | None, target: str) -> None:
        allowed = sorted(_allowed(current)) if current else ["requested"]
        super().__init__(
            f"lease {lease_id}: {current} -> {target} is not allowed (from {current}: {', '.join(allowed) or 'none'})"
        )
        self.lease_id = lease_id
        self.current = current
        self.target = target

    def problem_extensions(self) -> dict[str, Any]:
        """The same shape as the other state machines' refusals (controller.statemachine)."""
        allowed = sorted(_allowed(self.current)) if self.current else ["requested"]
        return {
            "machine": "lease",
            "lease": self.lease_id,
            "current": self.current,
            "target": self.target,
            "allowed": [{"to": to} for to in allowed],
        }


def _allowed(current: str) -> frozenset[str]:
    return frozenset(TRANSITIONS.get(current, frozenset()))  # type: ignore[call-overload]


def check(current: str | None, target: str, lease_id: str = "?") -> None:
    if current is None:
        if target != "requested":
            raise IllegalTransition(lease_id, current, target)
        return
    if target not in _allowed(current):
        raise IllegalTransition(lease_id, current, target)


def transition(
    session: Session,
    lease: Lease,
    target: LeaseState,
    reason: str = "",
    *,
    at: datetime | None = None,
    owner: str | None = None,
    deadline: datetime | None = None,
) -> None:
    """Move ``lease`` to ``target`` (checked against the table) and store the transition in ``session``.

    Entering a transitional state needs its ``deadline`` (and the ``owner`` driving it, if any); every other
    state clears both."""
    current = lease.state or None
    check(current, target, lease.id)
    now = at or datetime.now(UTC)
    if target in TRANSITIONAL:
        if deadline is None:
            raise ValueError(f"lease {lease.id}: entering {target} needs a deadline")
        lease.owner, lease.deadline = owner, deadline
    else:
        lease.owner, lease.deadline = None, None
    lease.state = target
    if target in ("releasing", "released", "failed"):
        lease.access_sealed = None  # credentials end with the lease (controller.leases.access)
    if target == "failed" or reason:
        lease.reason = reason
    lease.updated_at = now
    session.add(LeaseTransition(lease_id=lease.id, from_state=current, to_state=target, reason=reason, at=now))
