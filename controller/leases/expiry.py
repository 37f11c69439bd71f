"""Leases whose ``duration`` is over: the ``lease-expiry`` hook releases them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from controller.leases.release import Releases
from controller.leases.state import HOLDING
from controller.store.db import Database
from controller.store.models import Lease

log = logging.getLogger("gpufabric.leases")


def expire(db: Database, releases: Releases, now: datetime | None = None) -> list[str]:
    """Release every lease whose ``duration`` is over; returns their ids."""
    now = now or datetime.now(UTC)
    with db.session() as session:
        ids = list(
            session.scalars(
                select(Lease.id).where(Lease.expires_at.is_not(None), Lease.expires_at <= now, Lease.state.in_(HOLDING))
            )
        )
    for lid in ids:
        try:
            releases.release(lid, None, "expired: its duration is over")
        except Exception:
            log.exception("could not expire lease %s", lid)
    return ids
