"""The crash suite's harness: controller replicas as real processes on one PostgreSQL schema, one of which can be
told to die (``os._exit``) at a named point of the lease lifecycle, and the invariants checked after each crash.

Replica ``A`` runs the scheduler (it leads whenever it runs, so recovery happens there); replica ``B`` only serves.
Both use short liveness settings so a crash is noticed in seconds; recovery is measured from A's restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from controller.leases.faults import CRASH_ENV, CRASH_EXIT_CODE
from controller.store.db import Database
from controller.testing import free_port

FAST_LIVENESS = {
    "GPUFABRIC_LEADER_LEASE_S": "2",
    "GPUFABRIC_INSTANCE_HEARTBEAT_S": "0.5",
    "GPUFABRIC_INSTANCE_TIMEOUT_S": "2",
    "GPUFABRIC_LEASE_RECOVERY_INTERVAL_S": "1",
    # No agents heartbeat in this suite: hosts must not be swept unreachable while it runs.
    "GPUFABRIC_HEARTBEAT_TIMEOUT_S": "3600",
    "GPUFABRIC_LOG_LEVEL": "INFO",
}
RECOVERY_WAIT_S = 90.0


@dataclass
class Replica:
    name: str
    database_url: str
    tmp_path: Path
    scheduler: bool
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    starts: int = 0

    def start(self, crash_at: str | None = None) -> Replica:
        port = free_port()
        env = {
            **os.environ,
            **FAST_LIVENESS,
            **self.extra_env,
            "GPUFABRIC_DATABASE_URL": self.database_url,
            "GPUFABRIC_DATA_DIR": str(self.tmp_path / self.name),
            "GPUFABRIC_SCHEDULER_ENABLED": "true" if self.scheduler else "false",
            "GPUFABRIC_DB_POOL_SIZE": "4",
        }
        env.pop(CRASH_ENV, None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        self.starts += 1
        log = (self.tmp_path / f"{self.name}.log").open("ab")
        log.write(f"\n===== start {self.starts} crash_at={crash_at}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("gpufabric")), "controller", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if crash_at and self.proc.returncode == CRASH_EXIT_CODE:
                    return self  # it reached its crash point while starting (e.g. in the start-up recovery)
                raise RuntimeError(f"replica {self.name} exited at start: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"replica {self.name} did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.tmp_path / f"{self.name}.log").read_text(errors="replace")[-3000:]

    def wait_crashed(self) -> None:
        """The replica must have died at its crash point (exit code ``CRASH_EXIT_CODE``)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=RECOVERY_WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"replica {self.name} did not reach its crash point: {self.log_tail()}") from None
        assert code == CRASH_EXIT_CODE, f"replica {self.name} exited {code}: {self.log_tail()}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def units(allocations: list[dict[str, Any]]) -> int:
    """Store claim rows a lease's allocations take (a MIG instance takes one row per memory slice)."""
    n = 0
    for a in allocations:
        if a["kind"] == "mig":
            n += int(a["placement"]["size"])
        elif a["kind"] == "gpu":
            n += 1
        else:
            n += int(a.get("units", 1))
    return n


def invariant_violations(db: Database, quota_in_use: Callable[[], dict[str, int]] | None = None) -> list[str]:
    """Everything that would be stranded: transitional leases, claims of non-holding leases, claims that do not
    match a holding lease's allocations, quota usage that does not match the holding leases."""
    bad: list[str] = []
    with db.engine.connect() as conn:
        leases = conn.execute(text("SELECT id, tenant, state, allocations, owner, deadline FROM leases")).all()
        live = Counter(
            r[0] for r in conn.execute(text("SELECT lease_id FROM slice_claims WHERE released_at IS NULL")).all()
        )
    holding = {r.id: r for r in leases if r.state in ("provisioning", "ready", "releasing")}
    for r in leases:
        if r.state in ("placing", "provisioning", "releasing"):
            bad.append(f"lease {r.id} is still {r.state} (owner {r.owner}, deadline {r.deadline})")
    for lease_id, n in live.items():
        if lease_id not in holding:
            bad.append(f"lease {lease_id} holds {n} live claims but is not holding")
    for lease_id, r in holding.items():
        want = units(r.allocations or [])
        if live.get(lease_id, 0) != want:
            bad.append(f"lease {lease_id} ({r.state}) has {live.get(lease_id, 0)} live claims, allocations say {want}")
    if quota_in_use is not None:
        expected: Counter[str] = Counter()
        for r in holding.values():
            for a in r.allocations or []:
                if a["kind"] == "gpu":
                    expected[r.tenant] += 1
        got = quota_in_use()
        for tenant in set(expected) | set(got):
            if expected.get(tenant, 0) != got.get(tenant, 0):
                bad.append(f"quota of {tenant}: in use {got.get(tenant, 0)}, holding leases {expected.get(tenant, 0)}")
    return bad


def wait_until_clean(check: Callable[[], list[str]], *, what: str) -> float:
    """Poll ``check`` until it reports nothing; returns the seconds it took. Fails after ``RECOVERY_WAIT_S``."""
    started = time.monotonic()
    problems = check()
    while problems:
        if time.monotonic() - started > RECOVERY_WAIT_S:
            raise AssertionError(f"{what}: still stranded after {RECOVERY_WAIT_S:.0f} s: {problems}")
        time.sleep(0.2)
        problems = check()
    return time.monotonic() - started


def crash(
    replica: Replica,
    point: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Start ``replica`` set to die at ``point`` and send it the request that gets there: the client sees the
    connection drop, and the replica must have exited at that point."""
    import pytest

    replica.start(crash_at=point)
    with pytest.raises(httpx.HTTPError), replica.client(token) as api:
        api.request(method, path, json=body, headers=headers)
    replica.wait_crashed()
