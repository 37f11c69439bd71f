"""Releasing a lease: ``releasing`` (owned by this process), the backend's release, then the claims are freed.

A ``releasing`` lease nobody alive drives (its owner crashed, or a failed backend release waits for its retry) is
taken over by the next release of it. A backend release that fails keeps the claims (the backend may still hold
the resources) and the lease ``releasing``, retried with back-off by the recovery job; it never becomes ``failed``
with live claims (docs/architecture.md, step 4 and 5).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from controller import audit
from controller.auth.tokens import Principal
from controller.backends.registry import BackendRegistry
from controller.leases.backend_call import backend_call
from controller.leases.claims import Claims
from controller.leases.errors import LeaseNotFound, PlacementContended
from controller.leases.faults import crash_point
from controller.leases.metrics import Stats
from controller.leases.ownership import Ownership
from controller.leases.state import HOLDING, TERMINAL, transition
from controller.store.db import Database
from controller.store.models import Lease

log = logging.getLogger("gpufabric.leases")


class Releases:
    def __init__(
        self, db: Database, ownership: Ownership, claims: Claims, stats: Stats, backends: BackendRegistry
    ) -> None:
        self.db = db
        self.backends = backends
        self.ownership = ownership
        self.claims = claims
        self.stats = stats

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
                if self.ownership.driven_elsewhere(session, lease):
                    return
                self.ownership.take(session, lease, "a release of a releasing lease")
            elif lease.state not in HOLDING:
                raise PlacementContended(f"lease {lease_id} is {lease.state}; retry")
            else:
                transition(
                    session, lease, "releasing", reason,
                    owner=self.ownership.owner, deadline=self.ownership.timeouts.deadline("releasing"),
                )  # fmt: skip
        self.drive(lease_id, principal)

    def drive(self, lease_id: str, principal: Principal | None) -> None:
        """Finish a ``releasing`` lease this process owns: the backend's release (idempotent), then free the claims.

        A backend error keeps the claims (the backend may still hold the resources, so nobody else is given them)
        and the lease ``releasing`` with nobody driving it; the recovery job tries again at its deadline, with
        back-off. A lease that entered ``releasing`` because it failed ends ``failed`` with that reason."""
        with self.ownership.marked(lease_id):
            crash_point("release.marked")
            call = backend_call(self.db, lease_id, "releasing")
            if call is None:
                return
            try:
                self.backends.get(call.backend).release(call.info)
            except Exception as exc:
                with self.db.session() as session:
                    row = session.get(Lease, lease_id, with_for_update=True)
                    if row is None or row.state != "releasing":
                        return
                    attempts = int((row.placement or {}).get("release_attempts", 0)) + 1
                    row.placement = {**(row.placement or {}), "release_attempts": attempts}
                    row.owner = None
                    row.deadline = self.ownership.timeouts.release_retry(attempts - 1)
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
                ids = self.claims.release_claims(session, lease_id)
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
        self.claims.released(lease_id, ids)

    def fail_through_release(self, lease_id: str, reason: str) -> None:
        """Fail a ``provisioning`` lease whose backend may hold something: release it there first, then fail."""
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state != "provisioning":
                return
            lease.placement = {**(lease.placement or {}), "failure": reason}
            transition(
                session, lease, "releasing", reason,
                owner=self.ownership.owner, deadline=self.ownership.timeouts.deadline("releasing"),
            )  # fmt: skip
        self.drive(lease_id, None)
