"""Long-polling a lease: ``GET /v1/leases/{id}?wait=N`` answers when the lease's state or reason changes.

Any replica may be the one that moves the lease (its creator, the recovery job, an agent's report on another
replica), so the wait re-reads the store: one indexed read of two columns, at intervals growing from
``FIRST_POLL_S`` to ``MAX_POLL_S`` (a handful of reads in the first second, then one a second), never a busy loop.
The request holds no thread and no database connection while it sleeps.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from controller.store.db import Database
from controller.store.models import Lease

MAX_WAIT_S = 60.0
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


def _state(db: Database, lease_id: str) -> tuple[str, str] | None:
    with db.session() as session:
        row = session.execute(select(Lease.state, Lease.reason).where(Lease.id == lease_id)).first()
    return None if row is None else (row[0], row[1])


async def wait_for_change(db: Database, lease_id: str, state: str, reason: str, wait_s: float) -> bool:
    """Wait up to ``wait_s`` (at most ``MAX_WAIT_S``) until the lease's ``(state, reason)`` differs from the one
    given; True when it did (or the lease is gone), False when the time ran out."""
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    delay = FIRST_POLL_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, MAX_POLL_S)
        now = await run_in_threadpool(_state, db, lease_id)
        if now != (state, reason):
            return True
