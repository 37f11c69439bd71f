"""Driving a lease to ``ready`` through its backend: provision, record the outcome, or place it again elsewhere.

The backend is called with no store transaction open (a cloud deploy may take a while); the outcome is recorded
only if the lease is still ``provisioning`` (row-locked: a concurrent release wins or waits, never interleaves).
A ``TryElsewhere`` gives the claims back and places the lease again without the hosts tried (up to
``MAX_CANDIDATES``); a ``ProvisionFailed`` fails it and frees its claims; any other error fails it through a
backend release (:class:`controller.leases.release.Releases`), so nothing the backend started is left behind.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from controller.backends.contract import ProvisionFailed, TryElsewhere
from controller.backends.registry import BackendRegistry
from controller.leases.access import AccessVault, split_access
from controller.leases.backend_call import backend_call
from controller.leases.claims import Claims, StoreConflict
from controller.leases.errors import LeaseRefused, PlacementContended, QuotaExceeded
from controller.leases.faults import crash_point
from controller.leases.ownership import Ownership
from controller.leases.release import Releases
from controller.leases.state import transition
from controller.placement import Decision, parse_request
from controller.store.db import Database
from controller.store.errors import is_transient
from controller.store.models import Lease

log = logging.getLogger("gpufabric.leases")

# How many times a lease whose backend said "try elsewhere" (e.g. Nova's No valid host) is placed again.
MAX_CANDIDATES = 3


class _LeaseMoved(Exception):
    """The lease left ``placing`` while this replica was placing it again."""


class Provisioning:
    def __init__(
        self,
        db: Database,
        ownership: Ownership,
        claims: Claims,
        releases: Releases,
        backends: BackendRegistry,
        vault: AccessVault,
    ) -> None:
        self.db = db
        self.vault = vault  # seals the access a backend hands out before it is stored
        self.backends = backends
        self.ownership = ownership
        self.claims = claims
        self.releases = releases
        self._locks = [threading.RLock() for _ in range(64)]

    def provision(self, lease_id: str) -> None:
        """Ask the lease's backend (idempotent) and record the outcome; a lease not ``provisioning`` is left
        alone. One provisioning at a time per lease in this process.

        ``pending`` leaves the lease resting (no owner) until something outside moves (an agent report, a sync
        job) or its deadline passes. A backend error other than ``ProvisionFailed`` fails the lease through a
        backend release, so nothing the backend may have started is left behind."""
        with self._locks[hash(lease_id) % len(self._locks)], self.ownership.marked(lease_id):
            call = backend_call(self.db, lease_id, "provisioning")
            if call is None:
                return
            backend = call.backend
            try:
                outcome = self.backends.get(backend).provision(call.info, call.allocations)
            except TryElsewhere as exc:
                relocate = exc
            except ProvisionFailed as exc:
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id, with_for_update=True)
                    if lease is not None and lease.state == "provisioning":
                        self._fail_and_release(session, lease, f"provisioning failed: {exc}")
                return
            except Exception as exc:
                log.exception("provisioning lease %s on %s raised", lease_id, backend)
                self.releases.fail_through_release(lease_id, f"provisioning failed: {type(exc).__name__}: {exc}")
                return
            else:
                crash_point("create.provisioned")
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id, with_for_update=True)
                    if lease is None or lease.state != "provisioning":
                        return  # released meanwhile; the backend's release (or the reconciler) cleans up
                    if outcome.state == "ready":
                        lease.result, access = split_access(outcome.result)
                        lease.access_sealed = self.vault.seal(access)
                        transition(session, lease, "ready", "provisioned")
                    else:
                        lease.reason = outcome.message
                        lease.owner = None  # resting: an agent, a sync job or the deadline moves it on
                        lease.updated_at = datetime.now(UTC)
                return
        self._relocate(lease_id, relocate)

    def _relocate(self, lease_id: str, why: TryElsewhere) -> None:
        """The backend could not use the hosts it was given: give the claims back and place the lease again,
        without those hosts (and the ones tried before); after ``MAX_CANDIDATES`` tries, or when nothing else
        fits, the lease fails with every reason on record."""
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state != "provisioning":
                return
            given = sorted({a["host"] for a in lease.allocations})
            placement = dict(lease.placement or {})
            tried = sorted(set(placement.get("tried_hosts", [])) | set(why.hosts or given))
            attempts = [*placement.get("failed_attempts", []), {"hosts": given, "reason": str(why)}]
            placement.update(tried_hosts=tried, failed_attempts=attempts)
            lease.placement = placement
            req = parse_request(lease.request)
            tenant = lease.tenant
            ids = self.claims.release_claims(session, lease_id)
            if len(attempts) >= MAX_CANDIDATES:
                transition(session, lease, "failed", f"provisioning failed on {len(attempts)} candidates; last: {why}")
                session.flush()
                session.commit()
                self.claims.released(lease_id, ids)
                return
            transition(
                session, lease, "placing", f"{', '.join(given)}: {why}; trying another candidate",
                owner=self.ownership.owner, deadline=self.ownership.timeouts.deadline("placing"),
            )  # fmt: skip
        self.claims.released(lease_id, ids)

        def store(decision: Decision) -> None:
            try:
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id)
                    if lease is None or lease.state != "placing":
                        raise _LeaseMoved()
                    moved = self.claims.insert_claims(session, lease, decision, at=datetime.now(UTC))
            except IntegrityError as exc:
                raise StoreConflict(str(exc.orig)) from None
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                raise StoreConflict(f"the database asked to retry: {exc.orig}") from None
            self.claims.index.adopt_own_commit(moved)

        try:
            self.claims.place_and_claim(lease_id, req, tenant, frozenset(tried), store)
        except LeaseRefused as exc:
            self._fail_placing(lease_id, f"provisioning failed on {', '.join(given)} ({why}); {exc.detail}")
            return
        except (QuotaExceeded, PlacementContended) as exc:
            self._fail_placing(lease_id, exc.detail)
            return
        except _LeaseMoved:
            return  # released (or moved on) meanwhile by someone else
        self.provision(lease_id)

    def _fail_placing(self, lease_id: str, reason: str) -> None:
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            if lease is not None and lease.state == "placing":
                transition(session, lease, "failed", reason)

    def _fail_and_release(self, session: Session, lease: Lease, reason: str) -> None:
        transition(session, lease, "failed", reason)
        ids = self.claims.release_claims(session, lease.id)
        session.flush()
        session.commit()
        self.claims.released(lease.id, ids)
