"""Schema-revision refusal, the heartbeat sweeper, scheduler leadership, the CLI against the DB."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from controller.api.app import create_app
from controller.jobs.leader import LeaderLeaseKeeper
from controller.jobs.sweeper import sweep_unreachable
from controller.store.db import Database
from controller.store.schema import SchemaError, schema_status
from tests.support.controller import Controller, make_settings
from tests.support.helpers import register, report, synthetic_inventory


def test_refuses_empty_and_unknown_schema(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    settings = make_settings(database_url, tmp_path)
    with pytest.raises(SchemaError, match="db upgrade"):
        create_app(settings, db=db)
    from controller.store.schema import upgrade

    upgrade(db.engine)
    create_app(settings, db=db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    assert not schema_status(db.engine).known
    with pytest.raises(SchemaError, match="does not know"):
        create_app(settings, db=db)
    db.dispose()


def test_serve_exits_non_zero_on_unknown_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = Database(url)
    from controller.store.schema import upgrade

    upgrade(db.engine)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    env = {**os.environ, "GPUFABRIC_DATABASE_URL": url, "GPUFABRIC_BIND_PORT": "0"}
    cmd = [sys.executable, "-c", "from controller.cli import main; main()", "controller", "serve"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "ffff" in done.stderr and "does not know" in done.stderr


def test_cli_db_upgrade_and_token_create(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "GPUFABRIC_DATABASE_URL": url}
    cli = [sys.executable, "-c", "from controller.cli import main; main()"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)

    assert run("controller", "db", "current").returncode == 1
    assert run("controller", "db", "upgrade").returncode == 0
    assert run("controller", "db", "current").returncode == 0
    created = run("admin", "token", "create", "--role", "admin", "--name", "first", "--json")
    assert created.returncode == 0, created.stderr
    assert '"token": "gft_' in created.stdout
    assert run("admin", "token", "create", "--role", "tenant").returncode == 2  # needs --tenant
    assert "first" in run("admin", "token", "list").stdout


def test_sweeper_marks_silent_hosts_unreachable(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "quiet")
        report(client, credential, synthetic_inventory("quiet"), 1)
        credential2 = register(client, controller.bootstrap_token, "chatty")
        report(client, credential2, synthetic_inventory("chatty"), 1)
        assert sweep_unreachable(controller.db, 60) == []
        later = datetime.now(UTC) + timedelta(seconds=120)
        assert sorted(sweep_unreachable(controller.db, 60, now=later)) == ["chatty", "quiet"]
        assert api.get("/v1/hosts/quiet").json()["status"] == "unreachable"
        assert [h["hostname"] for h in api.get("/v1/hosts", params={"state": "unreachable"}).json()] == [
            "chatty",
            "quiet",
        ]
        assert api.get("/v1/audit", params={"action": "host.unreachable"}).json()[0]["actor"] == "system"
        # Reporting again brings it back.
        report(client, credential, synthetic_inventory("quiet"), 2)
        assert api.get("/v1/hosts/quiet").json()["status"] == "ready"


def test_only_one_scheduler_leader(migrated_db: Database) -> None:
    a = LeaderLeaseKeeper(migrated_db, "replica-a", lease_s=30)
    b = LeaderLeaseKeeper(migrated_db, "replica-b", lease_s=30)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.try_acquire() is True  # renewal
    assert a.is_leader() and not b.is_leader()
    a.release()
    assert b.try_acquire() is True
    # An expired lease is taken over.
    c = LeaderLeaseKeeper(migrated_db, "replica-c", lease_s=30)
    from controller.store.models import LeaderLease

    with migrated_db.session() as session:
        lease = session.get(LeaderLease, "scheduler")
        assert lease is not None
        lease.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert c.try_acquire() is True
    assert b.try_acquire() is False


def test_scheduler_runs_sweeper_and_hooks(migrated_db: Database, database_url: str, tmp_path: Path) -> None:
    import time

    from controller.jobs.hooks import HookRegistry
    from controller.testing import ServerThread

    calls: list[str] = []
    hooks = HookRegistry()
    hooks.register("lease-expiry", "test", lambda ctx: calls.append("lease-expiry"), interval_s=0.2)
    settings = make_settings(
        database_url, tmp_path, scheduler_enabled=True, sweep_interval_s=0.2, heartbeat_timeout_s=0.5
    )
    server = ServerThread(create_app(settings, db=migrated_db, hooks=hooks)).start()
    try:
        from controller.auth.tokens import Role, create_api_token

        with migrated_db.session() as session:
            _, boot = create_api_token(session, role=Role.bootstrap, name="b")
        import httpx

        with httpx.Client(base_url=server.url) as client:
            credential = register(client, boot, "ephemeral")
            report(client, credential, synthetic_inventory("ephemeral"), 1)
        deadline = time.monotonic() + 10
        from controller.store.models import Host

        while time.monotonic() < deadline:
            with migrated_db.session() as session:
                host = session.query(Host).filter_by(hostname="ephemeral").one()
                if host.status == "unreachable" and calls:
                    break
            time.sleep(0.1)
        assert host.status == "unreachable"
        assert "lease-expiry" in calls
    finally:
        server.stop()
