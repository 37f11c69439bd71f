"""Which controller instances are alive, and how long each lease state may last.

Every controller process refreshes its row in ``controller_instances`` every ``heartbeat_s``
(:class:`InstanceHeartbeat`). A lease in a transitional state names the instance driving it (``leases.owner``); when
that instance's row is older than ``instance_timeout_s`` (a ``kill -9``, a lost node) or the lease's ``deadline``
has passed, :mod:`controller.leases.recovery` steps in. A clean shutdown deletes the row, so its leases are taken
over at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controller.store.db import Database
from controller.store.models import ControllerInstance

log = logging.getLogger("gpufabric.leases")


@dataclass(frozen=True)
class LeaseTimeouts:
    """How long a lease may stay in each transitional state before recovery acts (seconds)."""

    placing_s: float = 300.0
    provisioning_s: float = 1800.0
    releasing_s: float = 600.0
    # A failed backend release is tried again after this, doubling up to ``release_retry_max_s``.
    release_retry_s: float = 15.0
    release_retry_max_s: float = 600.0
    # An instance whose row is older than this is gone: its leases are recovered.
    instance_timeout_s: float = 15.0

    def deadline(self, state: str, now: datetime | None = None) -> datetime:
        seconds = {"placing": self.placing_s, "provisioning": self.provisioning_s, "releasing": self.releasing_s}
        return (now or datetime.now(UTC)) + timedelta(seconds=seconds[state])

    def release_retry(self, attempt: int, now: datetime | None = None) -> datetime:
        delay = min(self.release_retry_max_s, self.release_retry_s * (2 ** min(max(attempt, 0), 16)))
        return (now or datetime.now(UTC)) + timedelta(seconds=delay)


def live_instances(session: Session, timeout_s: float, now: datetime | None = None) -> set[str]:
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=timeout_s)
    return set(session.scalars(select(ControllerInstance.instance_id).where(ControllerInstance.seen_at >= cutoff)))


def owner_alive(session: Session, owner: str | None, timeout_s: float, now: datetime | None = None) -> bool:
    if owner is None:
        return False
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=timeout_s)
    seen = session.scalar(select(ControllerInstance.seen_at).where(ControllerInstance.instance_id == owner))
    return seen is not None and seen >= cutoff


class InstanceHeartbeat:
    """Keeps this process's ``controller_instances`` row fresh from a daemon thread."""

    def __init__(self, db: Database, instance_id: str, interval_s: float) -> None:
        self.db = db
        self.instance_id = instance_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        now = datetime.now(UTC)
        with self.db.session() as session:
            done = session.execute(
                update(ControllerInstance)
                .where(ControllerInstance.instance_id == self.instance_id)
                .values(seen_at=now)
                .execution_options(synchronize_session=False)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                session.add(ControllerInstance(instance_id=self.instance_id, started_at=now, seen_at=now))

    def start(self) -> InstanceHeartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="gpufabric-instance-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:
                log.exception("could not refresh this controller instance's liveness row")

    def stop(self) -> None:
        """Stop beating and delete the row: this instance's leases may be taken over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.db.session() as session:
                session.execute(delete(ControllerInstance).where(ControllerInstance.instance_id == self.instance_id))
        except Exception:
            log.exception("could not remove this controller instance's liveness row")


def forget_instances(session: Session, older_than_s: float, keep: Iterable[str] = ()) -> int:
    """Delete rows of instances gone for long (they own no lease any more once recovery ran)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    stmt = delete(ControllerInstance).where(ControllerInstance.seen_at < cutoff)
    kept = list(keep)
    if kept:
        stmt = stmt.where(ControllerInstance.instance_id.not_in(kept))
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
