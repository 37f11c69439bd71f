"""Who drives a lease: this process's owner name, the leases it is driving right now, and taking a lease over.

A lease in a transitional state names its ``owner`` (the controller instance driving it, none while it rests)
and a ``deadline``. A lease this process owns but is not driving (an exception dropped it) is stranded; one owned
by another instance whose liveness row is fresh is left to it (docs/architecture.md, step 5).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from controller.leases.liveness import LeaseTimeouts, owner_alive
from controller.store.models import Lease

log = logging.getLogger("gpufabric.leases")


class Ownership:
    def __init__(self, owner: str, timeouts: LeaseTimeouts) -> None:
        # The name this process writes into ``leases.owner`` while it drives a lease (its controller instance id).
        self.owner = owner
        self.timeouts = timeouts
        # Leases this process is driving right now: an owned lease not in here was dropped (e.g. an exception).
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()

    @contextmanager
    def marked(self, lease_id: str) -> Iterator[None]:
        """This process drives ``lease_id`` for the duration (re-entrant: the outermost mark clears it)."""
        with self._driving_lock:
            mine = lease_id not in self._driving
            self._driving.add(lease_id)
        try:
            yield
        finally:
            if mine:
                with self._driving_lock:
                    self._driving.discard(lease_id)

    def driving(self, lease_id: str) -> bool:
        with self._driving_lock:
            return lease_id in self._driving

    def driven_elsewhere(self, session: Session, lease: Lease) -> bool:
        """Someone alive is working on this lease right now (another replica, or this process's own thread)."""
        if lease.owner is None:
            return False
        if lease.owner == self.owner:
            return self.driving(lease.id)
        return owner_alive(session, lease.owner, self.timeouts.instance_timeout_s)

    def take(self, session: Session, lease: Lease, why: str) -> None:
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
