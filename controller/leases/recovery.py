"""Finishing the leases a crash left half-way (the leader's ``lease-recovery`` job, and replays that find one).

A transitional lease (``placing``, ``provisioning``, ``releasing``) whose owner's liveness row went quiet, whose
deadline passed, or that this process owns but dropped is *stranded*; ``recover`` takes each over under its row
lock and drives it on (docs/architecture.md, step 5; docs/reliability.md).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from controller import audit
from controller.leases.faults import crash_point
from controller.leases.liveness import forget_instances, live_instances
from controller.leases.ownership import Ownership
from controller.leases.provisioning import Provisioning
from controller.leases.release import Releases
from controller.leases.state import TRANSITIONAL, transition
from controller.store.db import Database
from controller.store.models import Lease

log = logging.getLogger("gpufabric.leases")

# Liveness rows of controller instances silent for this long are deleted by the recovery job.
FORGET_INSTANCES_AFTER_S = 3600.0


class Recovery:
    def __init__(self, db: Database, ownership: Ownership, provisioning: Provisioning, releases: Releases) -> None:
        self.db = db
        self.ownership = ownership
        self.provisioning = provisioning
        self.releases = releases

    def stranded(self, now: datetime | None = None) -> list[str]:
        """Transitional leases nobody alive is driving: owner gone, deadline passed, or owned by this process but
        dropped by it. Ordered oldest first."""
        now = now or datetime.now(UTC)
        timeouts = self.ownership.timeouts
        with self.db.session() as session:
            rows = session.execute(
                select(Lease.id, Lease.owner, Lease.deadline)
                .where(Lease.state.in_(TRANSITIONAL))
                .order_by(Lease.updated_at, Lease.id)
            ).all()
            if not rows:
                return []
            live = live_instances(session, timeouts.instance_timeout_s, now)

        def stranded(lid: str, owner: str | None, deadline: datetime | None) -> bool:
            if deadline is None or deadline <= now:
                return True
            if owner == self.ownership.owner:
                return not self.ownership.driving(lid)
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
        timeouts = self.ownership.timeouts
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state not in TRANSITIONAL:
                return None
            overdue = lease.deadline is None or lease.deadline <= now
            if not overdue and self.ownership.driven_elsewhere(session, lease):
                return None
            if not overdue and lease.owner is None:
                return None  # resting within its deadline: an agent or a sync job moves it on
            why = "its deadline passed" if overdue else f"its owner {lease.owner} is gone"
            state = lease.state
            if state == "placing":
                transition(session, lease, "failed", f"interrupted while placing ({why}); it holds nothing")
                action = "failed"
            elif state == "provisioning" and overdue:
                reason = f"provisioning did not finish within {timeouts.provisioning_s:.0f} s"
                if lease.reason:
                    reason += f" (last: {lease.reason})"
                lease.placement = {**(lease.placement or {}), "failure": reason}
                transition(
                    session, lease, "releasing", reason,
                    owner=self.ownership.owner, deadline=timeouts.deadline("releasing", now),
                )  # fmt: skip
                lease.recoveries = (lease.recoveries or 0) + 1
                action = "failing"
            else:
                deadline = lease.deadline
                self.ownership.take(session, lease, why)
                if state == "provisioning" and deadline is not None:
                    lease.deadline = deadline
                action = "provisioning" if state == "provisioning" else "releasing"
            audit.record(
                session, None, "lease.recover", lease_id, "ok",
                {"tenant": lease.tenant, "state": state, "why": why, "action": action},
            )  # fmt: skip
        crash_point("recover.taken")
        if action == "provisioning":
            self.provisioning.provision(lease_id)
        elif action in ("releasing", "failing"):
            self.releases.drive(lease_id, None)
        return action
