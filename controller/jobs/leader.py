"""Leadership across controller replicas: a row in ``leader_leases`` with an expiry.

Every replica runs a scheduler, but each job first checks that this replica holds the lease; the
holder renews it. A crashed leader's lease expires and another replica takes over within
``lease_s``. Acquisition is a single conditional UPDATE (or INSERT), atomic on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from controller.store.db import Database
from controller.store.models import LeaderLease


class LeaderLeaseKeeper:
    def __init__(self, db: Database, holder: str, *, name: str = "scheduler", lease_s: float = 30.0) -> None:
        self.db = db
        self.holder = holder
        self.name = name
        self.lease_s = lease_s
        self._leader_until: datetime | None = None

    def try_acquire(self) -> bool:
        """Acquire or renew; True when this replica leads until the new expiry."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.lease_s)
        with self.db.session() as session:
            result = session.execute(
                update(LeaderLease)
                .where(
                    LeaderLease.name == self.name,
                    or_(LeaderLease.holder == self.holder, LeaderLease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=expires)
            )
            won = bool(result.rowcount)  # type: ignore[attr-defined]
        if not won:
            try:
                with self.db.session() as session:
                    session.add(LeaderLease(name=self.name, holder=self.holder, expires_at=expires))
                won = True
            except IntegrityError:
                won = False
        self._leader_until = expires if won else None
        return won

    def is_leader(self) -> bool:
        return self._leader_until is not None and datetime.now(UTC) < self._leader_until

    def release(self) -> None:
        if self._leader_until is None:
            return
        with self.db.session() as session:
            lease = session.get(LeaderLease, self.name)
            if lease is not None and lease.holder == self.holder:
                session.delete(lease)
        self._leader_until = None
