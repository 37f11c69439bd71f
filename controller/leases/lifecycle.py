"""Releasing leases and finishing the ones a crash left half-way: the part of the lease service that drives a
lease out of a transitional state (``releasing``, and ``placing``/``provisioning`` left by a gone owner).

A lease in a transitional state names its ``owner`` (the controller instance driving it, none while it rests)
and a ``deadline``. ``release`` marks a holding lease ``releasing`` owned by this process and drives it; a
``releasing`` lease nobody alive drives is taken over. The leader's recovery job (``recover``) takes over every
lease whose owner's liveness row went quiet or whose deadline passed (docs/architecture.md, step 5).
``LeaseService`` (controller.leases.service) inherits these and provides the claims, the engine and provisioning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import audit
from controller.auth.tokens import Principal
from controller.backends.base import LeaseInfo, provisioner_for
from controller.leases.errors import LeaseNotFound, PlacementContended
from controller.leases.faults import crash_point
from controller.leases.fleet import allocation_from_dict
from controller.leases.liveness import LeaseTimeouts, forget_instances, live_instances, owner_alive
from controller.leases.state import HOLDING, TERMINAL, TRANSITIONAL, transition
from controller.placement import Allocation
from controller.store.db import Database
from controller.store.models import Lease

if TYPE_CHECKING:
    from controller.leases.service import Stats

log = logging.getLogger("gpufabric.leases")

# Liveness rows of controller instances silent for this long are deleted by the recovery job.
FORGET_INSTANCES_AFTER_S = 3600.0


def lease_info(lease: Lease, allocs: list[Allocation]) -> LeaseInfo:
    return LeaseInfo(lease.id, lease.tenant, lease.request, sorted({a.host_id for a in allocs}))


@dataclass(frozen=True)
class BackendCall:
    """What a call to a lease's backend needs, read from the store (no ORM object leaves the session)."""

    info: LeaseInfo
    allocations: list[Allocation]
    backend: str


def backend_call(db: Database, lease_id: str, state: str) -> BackendCall | None:
    """The lease's backend call while it is in ``state``; None when it is gone or has left that state."""
    with db.session() as session:
        lease = session.get(Lease, lease_id)
        if lease is None or lease.state != state:
            return None
        allocs = [allocation_from_dict(a) for a in lease.allocations]
        return BackendCall(lease_info(lease, allocs), allocs, lease.backend or "static")


class ReleaseAndRecovery:
    """Mixed into ``LeaseService``; the attributes and methods below are the service's."""

    db: Database
    owner: str
    timeouts: LeaseTimeouts
    stats: Stats

    def driving(self, lease_id: str) -> bool:
        raise NotImplementedError

    def _driving_marked(self, lease_id: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _provision(self, lease_id: str) -> None:
        raise NotImplementedError

    def _release_claims(self, session: Session, lease_id: str) -> list[int]:
        raise NotImplementedError

    def _engine_release(self, lease_id: str) -> None:
        raise NotImplementedError

    def _bump_signatures(self, ids: Iterable[int]) -> None:
        raise NotImplementedError

    def release(self, lease_id: str, principal: Principal | None, reason: str = "released by the tenant") -> None:
        """Release a holding lease: ``releasing`` (owned by this process), the backend's release, then the claims
        are freed and the lease is ``released``. Releasing a ``releasing`` lease drives it forward when nobody
        alive is driving it (its owner crashed, or a failed backend release waits for its retry)."""
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None:
                raise LeaseNotFound(f"lease {lease_id} not found")
            if lease.state in TERMINAL:
                return
            if lease.state == "releasing":
                if self._driven_elsewhere(session, lease):
                    return
                self._take(session, lease, "a release of a releasing lease")
            elif lease.state not in HOLDING:
                raise PlacementContended(f"lease {lease_id} is {lease.state}; retry")
            else:
                transition(
                    session, lease, "releasing", reason,
                    owner=self.owner, deadline=self.timeouts.deadline("releasing"),
                )  # fmt: skip
        self._drive_release(lease_id, principal)

    def _driven_elsewhere(self, session: Session, lease: Lease) -> bool:
        """Someone alive is working on this lease right now (another replica, or this process's own thread)."""
        if lease.owner is None:
            return False
        if lease.owner == self.owner:
            return self.driving(lease.id)
        return owner_alive(session, lease.owner, self.timeouts.instance_timeout_s)

    def _take(self, session: Session, lease: Lease, why: str) -> None:
        """Become the owner of a transitional lease (row-locked by the caller) and give it a fresh deadline."""
        previous = lease.owner
        if previous is not None and previous != self.owner:
            lease.recoveries = (lease.recoveries or 0) + 1
        lease.owner = self.owner
        lease.deadline = self.timeouts.deadline(lease.state)
        lease.updated_at = datetime.now(UTC)
        log.info(
            "taking over lease %s (%s) from %s: %s", lease.id, lease.state, previous or "nobody", why,
            extra={"lease": lease.id, "previous_owner": previous},
        )  # fmt: skip

    def _drive_release(self, lease_id: str, principal: Principal | None) -> None:
        """Finish a ``releasing`` lease this process owns: the backend's release (idempotent), then free the claims.

        A backend error keeps the claims (the backend may still hold the resources, so nobody else is given them)
        and the lease ``releasing`` with nobody driving it; the recovery job tries again at its deadline, with
        back-off. A lease that entered ``releasing`` because it failed ends ``failed`` with that reason."""
        with self._driving_marked(lease_id):
            crash_point("release.marked")
            call = backend_call(self.db, lease_id, "releasing")
            if call is None:
                return
            try:
                provisioner_for(call.backend, self.db).release(call.info)
            except Exception as exc:
                with self.db.session() as session:
                    row = session.get(Lease, lease_id, with_for_update=True)
                    if row is None or row.state != "releasing":
                        return
                    attempts = int((row.placement or {}).get("release_attempts", 0)) + 1
                    row.placement = {**(row.placement or {}), "release_attempts": attempts}
                    row.owner = None
                    row.deadline = self.timeouts.release_retry(attempts - 1)
                    row.reason = f"release failed ({attempts} attempts): {exc}; retrying at {row.deadline:%H:%M:%S}Z"
                    row.updated_at = datetime.now(UTC)
                    audit.record(session, principal, "lease.release", lease_id, "failed", {"error": str(exc)})
                log.warning("release of lease %s failed (attempt %d): %s", lease_id, attempts, exc)
                return
            crash_point("release.backend-released")
            with self.db.session() as session:
                row = session.get(Lease, lease_id, with_for_update=True)
                if row is None or row.state != "releasing":
                    return
                ids = self._release_claims(session, lease_id)
                failure = (row.placement or {}).get("failure")
                if failure:
                    transition(session, row, "failed", str(failure))
                else:
                    transition(session, row, "released", row.reason or "released")
                audit.record(
                    session, principal, "lease.release", lease_id, "ok",
                    {"tenant": row.tenant, "reason": row.reason},
                )  # fmt: skip
        self.stats.released += 1
        self._engine_release(lease_id)
        self._bump_signatures(ids)

    def _fail_through_release(self, lease_id: str, reason: str) -> None:
        """Fail a ``provisioning`` lease whose backend may hold something: release it there first, then fail."""
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state != "provisioning":
                return
            lease.placement = {**(lease.placement or {}), "failure": reason}
            transition(
                session, lease, "releasing", reason, owner=self.owner, deadline=self.timeouts.deadline("releasing")
            )
        self._drive_release(lease_id, None)

    def expire(self, now: datetime | None = None) -> list[str]:
        """Release every lease whose ``duration`` is over; returns their ids (the lease-expiry hook)."""
        now = now or datetime.now(UTC)
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(Lease.id).where(
                        Lease.expires_at.is_not(None), Lease.expires_at <= now, Lease.state.in_(HOLDING)
                    )
                )
            )
        for lid in ids:
            try:
                self.release(lid, None, "expired: its duration is over")
            except Exception:
                log.exception("could not expire lease %s", lid)
        return ids

    # --- recovery ----------------------------------------------------------------------------------------------

    def stranded(self, now: datetime | None = None) -> list[str]:
        """Transitional leases nobody alive is driving: owner gone, deadline passed, or owned by this process but
        dropped by it. Ordered oldest first."""
        now = now or datetime.now(UTC)
        with self.db.session() as session:
            rows = session.execute(
                select(Lease.id, Lease.owner, Lease.deadline)
                .where(Lease.state.in_(TRANSITIONAL))
                .order_by(Lease.updated_at, Lease.id)
            ).all()
            if not rows:
                return []
            live = live_instances(session, self.timeouts.instance_timeout_s, now)

        def stranded(lid: str, owner: str | None, deadline: datetime | None) -> bool:
            if deadline is None or deadline <= now:
                return True
            if owner == self.owner:
                return not self.driving(lid)
            return owner is not None and owner not in live

        return [lid for lid, owner, deadline in rows if stranded(lid, owner, deadline)]

    def recover(self, now: datetime | None = None) -> dict[str, str]:
        """Finish or fail every stranded lease (the leader's lease-recovery job); returns what was done per lease.

        Then forget instances gone for over an hour (``FORGET_INSTANCES_AFTER_S``): no lease names them any more."""
        done: dict[str, str] = {}
        for lid in self.stranded(now):
            try:
                action = self.recover_one(lid, now)
            except Exception:
                log.exception("could not recover lease %s", lid)
                continue
            if action:
                done[lid] = action
        with self.db.session() as session:
            held = session.scalars(select(Lease.owner).where(Lease.owner.is_not(None)).distinct())
            forget_instances(session, FORGET_INSTANCES_AFTER_S, keep=[o for o in held if o])
        return done

    def recover_one(self, lease_id: str, now: datetime | None = None) -> str | None:
        """Take a stranded lease over and drive it on; returns what was done (None: nothing was stranded).

        * ``placing``: it holds nothing (claims are committed together with ``provisioning``): it fails.
        * ``provisioning`` past its deadline: released at the backend, then ``failed`` with the reason.
        * ``provisioning`` whose owner is gone: provisioned again through the backend (idempotent); the original
          deadline stays, so repeated crashes cannot keep a lease provisioning for ever.
        * ``releasing``: the release is driven to its end (backend release, claims freed).
        """
        now = now or datetime.now(UTC)
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state not in TRANSITIONAL:
                return None
            overdue = lease.deadline is None or lease.deadline <= now
            if not overdue and self._driven_elsewhere(session, lease):
                return None
            if not overdue and lease.owner is None:
                return None  # resting within its deadline: an agent or a sync job moves it on
            why = "its deadline passed" if overdue else f"its owner {lease.owner} is gone"
            state = lease.state
            if state == "placing":
                transition(session, lease, "failed", f"interrupted while placing ({why}); it holds nothing")
                action = "failed"
            elif state == "provisioning" and overdue:
                reason = f"provisioning did not finish within {self.timeouts.provisioning_s:.0f} s"
                if lease.reason:
                    reason += f" (last: {lease.reason})"
                lease.placement = {**(lease.placement or {}), "failure": reason}
                transition(
                    session, lease, "releasing", reason,
                    owner=self.owner, deadline=self.timeouts.deadline("releasing", now),
                )  # fmt: skip
                lease.recoveries = (lease.recoveries or 0) + 1
                action = "failing"
            else:
                deadline = lease.deadline
                self._take(session, lease, why)
                if state == "provisioning" and deadline is not None:
                    lease.deadline = deadline
                action = "provisioning" if state == "provisioning" else "releasing"
            audit.record(
                session, None, "lease.recover", lease_id, "ok",
                {"tenant": lease.tenant, "state": state, "why": why, "action": action},
            )  # fmt: skip
        crash_point("recover.taken")
        if action == "provisioning":
            self._provision(lease_id)
        elif action in ("releasing", "failing"):
            self._drive_release(lease_id, None)
        return action
