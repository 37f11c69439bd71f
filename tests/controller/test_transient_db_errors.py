"""Database errors that mean "try again": which ones they are (made for real on SQLite and PostgreSQL), and what a
client sees of one (503 ``database-busy`` with ``Retry-After``, not a 500)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from controller.api.problems import install_problem_handlers
from controller.store.errors import is_transient
from tests.support.controller import _postgres_url_or_skip


def _sqlite_busy(tmp_path: Path) -> DBAPIError:
    """A write refused because another connection holds the file's write lock past the busy timeout."""
    path = tmp_path / "busy.db"
    holder = create_engine(f"sqlite:///{path}", isolation_level="AUTOCOMMIT")
    waiter = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with holder.connect() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("BEGIN EXCLUSIVE"))
        try:
            with pytest.raises(DBAPIError) as caught, waiter.begin() as other:
                other.execute(text("INSERT INTO t VALUES (1)"))
        finally:
            conn.execute(text("ROLLBACK"))
    holder.dispose()
    waiter.dispose()
    return caught.value


def _sqlite_duplicate(tmp_path: Path) -> DBAPIError:
    engine = create_engine(f"sqlite:///{tmp_path / 'dup.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    return caught.value


def test_a_busy_sqlite_file_is_transient_a_duplicate_key_is_not(tmp_path: Path) -> None:
    assert is_transient(_sqlite_busy(tmp_path))
    assert not is_transient(_sqlite_duplicate(tmp_path))
    assert not is_transient(ValueError("database is locked"))  # only database errors say so


@pytest.mark.postgres
def test_a_postgresql_deadlock_is_transient() -> None:
    """Two transactions lock two rows in opposite orders: PostgreSQL breaks the deadlock by failing one (40P01)."""
    engine = create_engine(_postgres_url_or_skip(), pool_size=2)
    table = f"deadlock_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2, timeout=30)
    failures: list[BaseException] = []

    def worker(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
                conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": first})
                both_hold_one.wait()
                conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": second})
        except DBAPIError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=pair) for pair in ((1, 2), (2, 1))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(failures) == 1, failures  # one was broken off, the other committed
        assert getattr(failures[0], "orig", None) is not None and failures[0].orig.sqlstate == "40P01"  # type: ignore[union-attr]
        assert is_transient(failures[0])
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))
        engine.dispose()


def test_the_api_answers_a_transient_error_with_503_and_retry_after(tmp_path: Path) -> None:
    busy, duplicate = _sqlite_busy(tmp_path), _sqlite_duplicate(tmp_path)
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/busy")
    def _busy() -> None:
        raise busy

    @app.get("/broken")
    def _broken() -> None:
        raise duplicate

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/busy")
        assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["type"].endswith("/database-busy") and "Idempotency-Key" in body["detail"]
        # Anything else is still an internal error (a bug to look at), not a retry.
        broken = client.get("/broken")
        assert broken.status_code == 500 and broken.json()["type"].endswith("/internal-error")
