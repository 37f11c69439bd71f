"""Database errors that say "try again", not "this is wrong": a deadlock the database broke, a serialization
failure, a lock it would not wait for, SQLite's busy database, or no pooled connection free in time.

The claim store retries them like a lost claim (``controller.leases.claims``); anywhere else the API answers 503 with
``Retry-After`` instead of a 500 (``controller.api.problems``)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# PostgreSQL SQLSTATEs: deadlock_detected, serialization_failure, lock_not_available.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error after which the same unit of work may simply run again: the database
    rolled the transaction back (deadlock, serialization failure, lock not available, SQLite busy), or no statement
    ran (no pooled connection free in time). A lost connection is not one: whether its commit happened is unknown."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    if getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)  # SQLite: the busy timeout ran out
