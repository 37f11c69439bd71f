"""Fixtures: a real controller (uvicorn in a thread) on SQLite and on PostgreSQL.

The PostgreSQL variant needs ``GPUFABRIC_TEST_POSTGRES_URL`` (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets a fresh schema selected through
``search_path``. Without the variable those tests skip, unless ``GPUFABRIC_REQUIRE_POSTGRES=1``,
when they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from controller.api.app import create_app
from controller.auth.tokens import Role, create_api_token
from controller.settings import Settings
from controller.store.db import Database
from controller.store.schema import upgrade
from controller.testing import ServerThread

POSTGRES_ENV = "GPUFABRIC_TEST_POSTGRES_URL"


def _postgres_url_or_skip() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        if os.environ.get("GPUFABRIC_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + "; GPUFABRIC_REQUIRE_POSTGRES=1 forbids skipping")
        pytest.skip(message)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'controller.db'}"
        return
    base = _postgres_url_or_skip()
    schema = f"gftest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        if os.environ.get("GPUFABRIC_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} unreachable: {exc}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Controller:
    url: str
    db: Database
    settings: Settings
    admin_token: str
    tenant_token: str
    bootstrap_token: str
    server: ServerThread

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "scheduler_enabled": False,
        "log_json": True,
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture
def migrated_db(database_url: str) -> Iterator[Database]:
    db = Database(database_url, pool_size=4)
    upgrade(db.engine)
    yield db
    db.dispose()


@contextmanager
def running_controller(
    migrated_db: Database, database_url: str, tmp_path: Path, **overrides: object
) -> Iterator[Controller]:
    """A controller on ``migrated_db`` (settings ``overrides`` over the tests' defaults) with an admin, a tenant
    (``acme``) and a bootstrap token."""
    settings = make_settings(database_url, tmp_path, **overrides)
    with migrated_db.session() as session:
        _, admin = create_api_token(session, role=Role.admin, name="test-admin")
        _, tenant = create_api_token(session, role=Role.tenant, name="test-tenant", tenant="acme")
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="test-bootstrap")
    server = ServerThread(create_app(settings, db=migrated_db)).start()
    try:
        yield Controller(server.url, migrated_db, settings, admin, tenant, bootstrap, server)
    finally:
        server.stop()


@pytest.fixture
def controller(migrated_db: Database, database_url: str, tmp_path: Path) -> Iterator[Controller]:
    with running_controller(migrated_db, database_url, tmp_path) as ctl:
        yield ctl
