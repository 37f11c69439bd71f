"""Heartbeat sweeper: hosts silent for longer than the timeout become ``unreachable``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import defer

from controller import audit
from controller.fleet.states import set_host_status
from controller.store.db import Database
from controller.store.models import Host

log = logging.getLogger("gpufabric.jobs.sweeper")


BATCH = 500


def sweep_unreachable(db: Database, timeout_s: float, *, now: datetime | None = None) -> list[str]:
    """Mark hosts unreachable whose last report is older than ``timeout_s``; returns their names.

    In transactions of ``BATCH`` hosts: after an outage tens of thousands of hosts can be silent at once, and one
    transaction holding all their rows would stall the last-seen flushes of the agents coming back."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=timeout_s)
    names: list[str] = []
    while True:
        batch = _sweep_batch(db, cutoff, timeout_s)
        names += batch
        if len(batch) < BATCH:
            break
    if names:
        log.warning("marked %d host(s) unreachable", len(names), extra={"hosts": names[:50]})
    return names


def _sweep_batch(db: Database, cutoff: datetime, timeout_s: float) -> list[str]:
    with db.session() as session:
        hosts = list(
            session.scalars(
                select(Host)
                .options(defer(Host.inventory))  # kilobytes of JSON per host, not needed to mark it
                # Only hosts that went silent: an index range scan on (status, last_seen), O(changes) per tick.
                .where(
                    ((Host.status == "ready") & (Host.last_seen < cutoff))
                    | (
                        (Host.status == "registered")
                        & ((Host.last_seen < cutoff) | (Host.last_seen.is_(None) & (Host.registered_at < cutoff)))
                    )
                )
                .order_by(Host.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True, of=Host)
            )
        )
        for host in hosts:
            set_host_status(host, "unreachable")
            audit.record(
                session,
                None,
                "host.unreachable",
                host.hostname,
                detail={"last_seen": host.last_seen.isoformat() if host.last_seen else None, "timeout_s": timeout_s},
            )
    return [h.hostname for h in hosts]
