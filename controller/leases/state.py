"""The lease state machine: one table of allowed transitions; every transition is stored.

::

    requested -> placing -> provisioning -> ready -> releasing -> released
                    |   ^        |  \\____________________/^         |
                    |   +--------+  (cancel while provisioning)      |
                    v   (try the next candidate)                     v
                  failed       failed                              failed

``failed`` carries a reason. Anything not in :data:`TRANSITIONS` raises :class:`IllegalTransition`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.orm import Session

from controller.store.models import Lease, LeaseTransition

LeaseState = Literal["requested", "placing", "provisioning", "ready", "releasing", "released", "failed"]

STATES: tuple[LeaseState, ...] = ("requested", "placing", "provisioning", "ready", "releasing", "released", "failed")

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

# States in which a lease holds claims in the store.
HOLDING: frozenset[LeaseState] = frozenset({"provisioning", "ready", "releasing"})
TERMINAL: frozenset[LeaseState] = frozenset({"released", "failed"})


class IllegalTransition(ValueError):
    def __init__(self, lease_id: str, current: str | None, target: str) -> None:
        allowed = sorted(_allowed(current)) if current else ["requested"]
        super().__init__(
            f"lease {lease_id}: {current} -> {target} is not allowed (from {current}: {', '.join(allowed) or 'none'})"
        )
        self.lease_id = lease_id
        self.current = current
        self.target = target


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
    session: Session, lease: Lease, target: LeaseState, reason: str = "", *, at: datetime | None = None
) -> None:
    """Move ``lease`` to ``target`` (checked against the table) and store the transition in ``session``."""
    current = lease.state or None
    check(current, target, lease.id)
    now = at or datetime.now(UTC)
    lease.state = target
    if target == "failed" or reason:
        lease.reason = reason
    lease.updated_at = now
    session.add(LeaseTransition(lease_id=lease.id, from_state=current, to_state=target, reason=reason, at=now))
