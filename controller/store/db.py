"""Engine and sessions for the store (SQLite by default, PostgreSQL for several replicas)."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from controller.store.changes import HostChangeFeed

log = logging.getLogger("gpufabric.store")


def json_dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson does not take (integers past 64 bits) the json module still writes
        return json.dumps(value)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    # JSON columns (inventories, device details, policies) through orjson: several times faster than the json
    # module both ways, and the same documents (string keys, insertion order; non-string keys as json does).
    kwargs: dict[str, Any] = {"future": True, "json_serializer": json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_sqlite_file(Path(database))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # Sync routes run in anyio's threadpool (40 threads): pool_size + max_overflow covers it, and
        # LIFO reuse keeps the hot connections warm (overflow connections are closed when returned
        # to a full pool, so a pool much smaller than the concurrency churns connections).
        kwargs.update(
            pool_size=pool_size, max_overflow=max(pool_size, 40 - pool_size), pool_pre_ping=True, pool_use_lifo=True
        )
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def private_sqlite_file(path: Path) -> None:
    """Create the database file readable by its owner only (0600) before SQLite opens it, and tighten one made
    before: it holds token hashes and backend credentials. SQLite creates its -wal and -shm files with the
    database file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # the umask can only take bits away
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
            for suffix in ("-wal", "-shm"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
    except OSError as exc:  # e.g. the file belongs to another user: run anyway, say why it is still open
        log.warning("could not make %s private (0600): %s", path, exc)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers (metrics, admin API) run beside the writer; NORMAL sync is durable enough in WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """The engine and session factory one controller process uses."""

    def __init__(
        self, url: str, *, pool_size: int = 10, change_poll_s: float = 0.5, deletion_scan_s: float = 60.0
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Every session of this database stamps host changes at commit; see controller.store.changes.
        self.changes = HostChangeFeed(
            self.engine, self._sessions, poll_interval_s=change_poll_s, deletion_scan_s=deletion_scan_s
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.changes.close()
        self.engine.dispose()
