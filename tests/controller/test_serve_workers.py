"""`gpufabric controller serve --workers N` (GPUFABRIC_WORKERS): N processes on one port, each with its own caches
and change-feed poller, one scheduler leader among them, and a desired-state change seen by all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from controller.auth.tokens import Role, create_api_token
from controller.store.db import Database
from controller.store.models import LeaderLease
from controller.store.schema import upgrade
from controller.testing import free_port
from tests.controller.test_fleet_scale_path import SHARING, _heartbeat
from tests.support.helpers import register, report, synthetic_inventory


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _workers(pid: int) -> set[int]:
    # uvicorn's workers, not multiprocessing's resource tracker
    return {c for c in _children(pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()}


@pytest.mark.slow
def test_two_workers_share_the_port_and_the_fleet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    db = Database(url)
    upgrade(db.engine)
    with db.session() as session:
        _, admin = create_api_token(session, role=Role.admin, name="admin")
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="bootstrap")
    port = free_port()
    env = {
        **os.environ,
        "GPUFABRIC_DATABASE_URL": url,
        "GPUFABRIC_DATA_DIR": str(tmp_path),
        "GPUFABRIC_WORKERS": "2",
        "GPUFABRIC_LEADER_LEASE_S": "3",
        "GPUFABRIC_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "serve.log").open("wb")
    exe = str(Path(sys.executable).with_name("gpufabric"))
    proc = subprocess.Popen([exe, "controller", "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(_workers(proc.pid)) < 2 or not _answers(base):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "two workers did not come up"
            time.sleep(0.1)
        workers = _workers(proc.pid)
        with httpx.Client(base_url=base, timeout=30) as client:
            credential = register(client, bootstrap, "w-host")
            assert report(client, credential, synthetic_inventory("w-host"), generation=1).status_code == 200
            before = _heartbeat(client, "w-host", credential).json()["desired"]["revision"]
            changed = client.put(
                "/v1/hosts/w-host/desired", json={"sharing": SHARING}, headers={"Authorization": f"Bearer {admin}"}
            )
            assert changed.status_code == 200
        # Every new connection may land on either worker: all of them answer the new state within a few polls.
        deadline = time.monotonic() + 30
        fresh = 0
        while fresh < 10:
            assert time.monotonic() < deadline, "a worker kept answering the old desired state"
            with httpx.Client(base_url=base, timeout=30) as client:  # a new connection
                desired = _heartbeat(client, "w-host", credential).json()["desired"]
            fresh = fresh + 1 if desired["revision"] != before else 0
            time.sleep(0.05)
        # One scheduler among the workers: the leader lease is held by a worker process.
        deadline = time.monotonic() + 30
        while True:
            with db.session() as session:
                holders = [row.holder for row in session.scalars(select(LeaderLease))]
            if holders:
                break
            assert time.monotonic() < deadline, "no worker took the scheduler lease"
            time.sleep(0.1)
        assert len(holders) == 1
        assert any(f"-{pid}-" in holders[0] for pid in workers), (holders, workers)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        db.dispose()


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
