"""The agent path at fleet scale: unchanged heartbeats touch no store, desired-state changes reach every replica
within one report interval, a killed replica loses at most its buffered last-seen window, bad agent input is
refused with 413/422/403 and changes nothing, and agents past the in-flight limit are told when to come back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from controller.api.admission import AdmissionMiddleware
from controller.api.app import create_app
from controller.auth.tokens import Role, create_api_token
from controller.observability.metrics import ApiMetrics
from controller.store.changes import DELETED, mark_hosts_changed
from controller.store.db import Database
from controller.store.models import AppliedStatus, DesiredOverride, Host, Lease, SliceClaim
from controller.store.schema import upgrade
from controller.testing import ServerThread
from drivers.contract.protocol import AppliedState, Heartbeat, inventory_content_hash
from tests.controller.test_lease_concurrency import _start_replica, postgres_database  # noqa: F401  (fixture)
from tests.support.controller import Controller, make_settings
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

SHARING = {
    "config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
}
BACKGROUND_THREADS = ("gpufabric-last-seen", "gpufabric-change-feed", "gpufabric-warm-replies")


def _heartbeat(client: httpx.Client, hostname: str, credential: str, **fields: Any) -> httpx.Response:
    inv = synthetic_inventory(hostname)
    body = Heartbeat(generation=1, inventory_hash=inventory_content_hash(inv), **fields).model_dump(mode="json")
    return client.post(f"/v1/agents/{hostname}/heartbeat", json=body, headers={"Authorization": f"Bearer {credential}"})


class StatementLog:
    """Statements the engine runs on request threads (the batched flusher and the change-feed poller apart)."""

    def __init__(self, db: Database) -> None:
        self.statements: list[str] = []
        self._db = db
        event.listen(db.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name not in BACKGROUND_THREADS:
            self.statements.append(statement)

    def close(self) -> None:
        event.remove(self._db.engine, "before_cursor_execute", self._on_execute)


def test_unchanged_heartbeat_touches_no_store(controller: Controller) -> None:
    with controller.client() as client:
        credential = register(client, controller.bootstrap_token, "quiet-host")
        assert report(client, credential, synthetic_inventory("quiet-host"), generation=1).status_code == 200
        applied = AppliedState(revision="r1", ok=True, message="", at=datetime.now(UTC))
        first = _heartbeat(client, "quiet-host", credential, applied=applied)  # a new applied state: written
        assert first.status_code == 200
        log = StatementLog(controller.db)
        try:
            for _ in range(20):
                reply = _heartbeat(client, "quiet-host", credential, applied=applied)
                assert reply.status_code == 200 and reply.json()["inventory_wanted"] is False
        finally:
            log.close()
        assert log.statements == [], log.statements[:5]
        # ... and yet last_seen reaches the store within a flush
        flushed = controller.server.app.state.last_seen.flush()  # type: ignore[attr-defined]
        assert flushed == 1
        with controller.db.session() as session:
            assert session.get(AppliedStatus, session.scalar(select(Host.id).where(Host.hostname == "quiet-host")))


def test_desired_change_is_seen_by_the_next_heartbeat_on_this_replica(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "own-host")
        report(client, credential, synthetic_inventory("own-host"), generation=1)
        before = _heartbeat(client, "own-host", credential).json()["desired"]
        assert api.put("/v1/hosts/own-host/desired", json={"sharing": SHARING}).status_code == 200
        after = _heartbeat(client, "own-host", credential).json()["desired"]
        assert after["revision"] != before["revision"] and after["sharing"] == SHARING
        # a task is answered at once too
        assert api.post("/v1/hosts/own-host/tasks", json={"kind": "ping"}).status_code == 201
        tasks = _heartbeat(client, "own-host", credential).json()["tasks"]
        assert [t["kind"] for t in tasks] == ["ping"]


@pytest.fixture
def two_replicas(postgres_database: str, tmp_path: Path) -> Iterator[tuple[Controller, Controller]]:  # noqa: F811
    dbs = [Database(postgres_database, pool_size=4) for _ in range(2)]
    upgrade(dbs[0].engine)
    with dbs[0].session() as session:
        _, admin = create_api_token(session, role=Role.admin, name="admin")
        _, tenant = create_api_token(session, role=Role.tenant, name="tenant", tenant="acme")
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="bootstrap")
    replicas = []
    for i, db in enumerate(dbs):
        settings = make_settings(postgres_database, tmp_path / f"r{i}")
        server = ServerThread(create_app(settings, db=db)).start()
        replicas.append(Controller(server.url, db, settings, admin, tenant, bootstrap, server))
    try:
        yield replicas[0], replicas[1]
    finally:
        for r in replicas:
            r.server.stop()
            r.db.dispose()


@pytest.mark.postgres
def test_replicas_serving_one_host_alternately_see_a_desired_change_within_one_interval(
    two_replicas: tuple[Controller, Controller],
) -> None:
    a, b = two_replicas
    with a.client() as ca, b.client() as cb, a.admin() as admin_a:
        credential = register(ca, a.bootstrap_token, "shared-host")
        report(ca, credential, synthetic_inventory("shared-host"), generation=1)
        revisions = {_heartbeat(c, "shared-host", credential).json()["desired"]["revision"] for c in (ca, cb, ca, cb)}
        assert len(revisions) == 1  # both replicas cache the same reply
        (old,) = revisions
        assert admin_a.put("/v1/hosts/shared-host/desired", json={"sharing": SHARING}).status_code == 200
        changed_at = time.monotonic()
        seen_on_b = None
        while time.monotonic() - changed_at < b.settings.report_interval_s:
            desired = _heartbeat(cb, "shared-host", credential).json()["desired"]
            if desired["revision"] != old:
                seen_on_b = time.monotonic() - changed_at
                assert desired["sharing"] == SHARING
                break
            time.sleep(0.05)
        assert seen_on_b is not None, "replica B never answered the new desired state"
        # and replica A answers it at once (its own write)
        assert _heartbeat(ca, "shared-host", credential).json()["desired"]["revision"] != old


@pytest.mark.postgres
@pytest.mark.slow
def test_replica_killed_mid_flush_loses_no_desired_state_or_lease_write(
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    db = Database(postgres_database, pool_size=2)
    upgrade(db.engine)
    with db.session() as session:
        _, admin = create_api_token(session, role=Role.admin, name="admin")
        _, tenant = create_api_token(session, role=Role.tenant, name="tenant", tenant="acme")
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="bootstrap")
    os.environ["GPUFABRIC_LAST_SEEN_FLUSH_S"] = "3600"  # nothing buffered is ever flushed before the kill
    try:
        proc, url = _start_replica(postgres_database, tmp_path, "doomed")
    finally:
        del os.environ["GPUFABRIC_LAST_SEEN_FLUSH_S"]
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            credential = register(client, bootstrap, "doomed-host")
            assert report(client, credential, synthetic_inventory("doomed-host"), generation=1).status_code == 200
            with db.session() as session:
                reported_seen = session.scalar(select(Host.last_seen).where(Host.hostname == "doomed-host"))
            headers = {"Authorization": f"Bearer {admin}"}
            assert client.put("/v1/hosts/doomed-host/desired", json={"sharing": SHARING}, headers=headers).is_success
            lease = client.post(
                "/v1/leases",
                json={"slices": [{"kind": "gpu", "count": 1}]},
                headers={"Authorization": f"Bearer {tenant}"},
            )
            assert lease.status_code == 201, lease.text
            for _ in range(5):  # buffered last_seen only
                assert _heartbeat(client, "doomed-host", credential).status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with db.session() as session:
        host = session.scalars(select(Host).where(Host.hostname == "doomed-host")).one()
        override = session.get(DesiredOverride, host.id)
        assert override is not None and override.sharing == SHARING
        stored = session.get(Lease, lease.json()["id"])
        assert stored is not None and stored.state == "ready"
        live = session.scalars(select(SliceClaim).where(SliceClaim.released_at.is_(None))).all()
        assert [c.lease_id for c in live] == [stored.id]
        # only the buffered window is lost: last_seen is the report's, not a heartbeat's
        assert host.last_seen == reported_seen
    db.dispose()


def test_agent_routes_refuse_oversized_malformed_and_foreign_input(controller: Controller) -> None:
    limit = controller.settings.max_request_body_bytes
    with controller.client() as client:
        a = register(client, controller.bootstrap_token, "host-a")
        b = register(client, controller.bootstrap_token, "host-b")
        report(client, a, synthetic_inventory("host-a"), generation=1)
        report(client, b, synthetic_inventory("host-b"), generation=1)
        with controller.db.session() as session:
            before = {h.hostname: (h.inventory_hash, h.inventory_generation) for h in session.scalars(select(Host))}
        auth_a = {"Authorization": f"Bearer {a}"}
        # over 1 MiB: 413, by Content-Length ...
        big = b'{"generation": 1, "inventory_hash": "' + b"x" * (limit + 10) + b'"}'
        body = assert_problem(
            client.post(
                "/v1/agents/host-a/heartbeat", content=big, headers={**auth_a, "content-type": "application/json"}
            ),
            413,
            "payload-too-large",
        )
        assert str(limit) in body["detail"]
        # ... and when chunked, with no Content-Length
        chunks = iter([big[: limit // 2], big[limit // 2 :]])
        assert_problem(
            client.put("/v1/agents/host-a/inventory", content=chunks, headers=auth_a), 413, "payload-too-large"
        )
        # malformed: 422 naming the field
        assert_problem(
            client.post("/v1/agents/host-a/heartbeat", content=b"{not json", headers=auth_a), 422, "validation-error"
        )
        bad = assert_problem(
            client.post("/v1/agents/host-a/heartbeat", json={"generation": -1}, headers=auth_a), 422, "validation-error"
        )
        assert "generation" in bad["detail"]
        # host A's credential never writes host B
        inv_b = synthetic_inventory("host-b", gpus=1)
        for response in (
            client.post("/v1/agents/host-b/heartbeat", json={"generation": 1}, headers=auth_a),
            client.put(
                "/v1/agents/host-b/inventory",
                json={"generation": 9, "inventory": inv_b.model_dump(mode="json")},
                headers=auth_a,
            ),
            client.post("/v1/agents/host-b/tasks/x/result", json={"status": "succeeded"}, headers=auth_a),
        ):
            assert_problem(response, 403, "forbidden")
        # a report for B sent to A's own path is refused too
        wrong = client.put(
            "/v1/agents/host-a/inventory",
            json={"generation": 9, "inventory": inv_b.model_dump(mode="json")},
            headers=auth_a,
        )
        assert_problem(wrong, 400, "bad-request")
        with controller.db.session() as session:
            after = {h.hostname: (h.inventory_hash, h.inventory_generation) for h in session.scalars(select(Host))}
        assert after == before
        metrics = client.get("/metrics").text
        assert "gpufabric_requests_too_large_total 2.0" in metrics


def test_agents_past_the_in_flight_limit_get_503_with_retry_after(tmp_path: Path) -> None:
    """The admission middleware through its ASGI interface: one agent request held in flight, the next shed."""
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(db.engine)
    metrics = ApiMetrics(db)
    middleware = AdmissionMiddleware(
        slow_app, metrics=metrics, max_body_bytes=1024 * 1024, agent_max_in_flight=1, retry_after_s=5,
        rng=random.Random(7),
    )  # fmt: skip

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            held = asyncio.create_task(client.post("/v1/agents/h/heartbeat", json={}))
            while middleware.agent_in_flight == 0:
                await asyncio.sleep(0)
            shed = await client.post("/v1/agents/h/heartbeat", json={})
            tenant = asyncio.create_task(client.get("/v1/leases"))  # other routes are never shed
            for _ in range(50):
                await asyncio.sleep(0)
            assert not tenant.done()  # it is in the app, waiting like the held agent request
            release.set()
            return await held, shed, await tenant

    held, shed, tenant = asyncio.run(scenario())
    assert held.status_code == 200 and tenant.status_code == 200
    assert shed.status_code == 503
    assert shed.headers["content-type"] == "application/problem+json"
    assert 5 <= int(shed.headers["retry-after"]) <= 10
    assert shed.json()["type"].endswith("/overloaded")
    assert middleware.agent_in_flight == 0
    assert metrics.agent_requests_shed._value.get() == 1
    db.dispose()


def test_a_restarted_replica_answers_plain_hosts_from_its_warmed_cache(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        plain = register(client, controller.bootstrap_token, "plain-host")
        report(client, plain, synthetic_inventory("plain-host"), generation=1)
        special = register(client, controller.bootstrap_token, "special-host")
        report(client, special, synthetic_inventory("special-host"), generation=1)
        assert api.put("/v1/hosts/special-host/desired", json={"sharing": SHARING}).status_code == 200
        # the credential is looked up once after each change of its host (here: the report), then cached
        assert _heartbeat(client, "plain-host", plain).status_code == 200
    with controller.db.session() as session:
        ids = {name: hid for name, hid in session.execute(select(Host.hostname, Host.id))}
    app = create_app(controller.settings, db=controller.db)  # a restart: a new app with empty caches
    server = ServerThread(app).start()
    try:
        replies = app.state.agent_replies
        replies.warm()
        assert replies.fresh(ids["plain-host"]) is not None
        assert replies.fresh(ids["special-host"]) is None  # built at its first heartbeat, with its override
        with httpx.Client(base_url=server.url, timeout=30) as client:
            log = StatementLog(controller.db)
            try:
                assert _heartbeat(client, "plain-host", plain).json()["desired"]["sharing"] is None
            finally:
                log.close()
            assert log.statements == []
            assert _heartbeat(client, "special-host", special).json()["desired"]["sharing"] == SHARING
    finally:
        server.stop()


@pytest.mark.postgres
def test_a_rotated_agent_credential_stops_working_on_every_replica(two_replicas: tuple[Controller, Controller]) -> None:
    a, b = two_replicas
    with a.client() as ca, b.client() as cb:
        old = register(ca, a.bootstrap_token, "rotating-host")
        report(ca, old, synthetic_inventory("rotating-host"), generation=1)
        assert _heartbeat(cb, "rotating-host", old).status_code == 200  # B caches the credential
        new = register(ca, old, "rotating-host")  # re-registration (own credential) through A rotates it
        deadline = time.monotonic() + b.settings.change_poll_s * 20
        while _heartbeat(cb, "rotating-host", old).status_code == 200:
            assert time.monotonic() < deadline, "replica B kept accepting the rotated credential"
            time.sleep(0.05)
        assert_problem(_heartbeat(cb, "rotating-host", old), 401, "unauthorized")
        assert _heartbeat(cb, "rotating-host", new).status_code == 200


def test_a_host_deleted_elsewhere_is_announced_by_the_deletion_scan(controller: Controller, tmp_path: Path) -> None:
    other = Database(controller.db.url, pool_size=2, change_poll_s=3600, deletion_scan_s=0)  # another replica
    heard: dict[int, int] = {}
    other.changes.subscribe(heard.update)
    try:
        with controller.client() as client, controller.admin() as api:
            register(client, controller.bootstrap_token, "doomed")
            other.changes.poll()  # first scan: learns the ids
            with controller.db.session() as session:
                doomed = session.scalar(select(Host.id).where(Host.hostname == "doomed"))
            assert api.delete("/v1/hosts/doomed").status_code in (200, 204)
        heard.clear()
        other.changes.poll()
        assert heard.get(doomed) == DELETED
    finally:
        other.dispose()


def test_openapi_declares_the_limits(controller: Controller) -> None:
    with controller.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    heartbeat = paths["/v1/agents/{host}/heartbeat"]["post"]["responses"]
    assert {"413", "422", "503"} <= heartbeat.keys()
    assert "Retry-After" in heartbeat["503"]["headers"]
    assert "413" in paths["/v1/leases"]["post"]["responses"]
    assert "503" not in paths["/v1/leases"]["post"]["responses"]


def test_the_change_feed_announces_every_host_of_a_large_commit(controller: Controller) -> None:
    """One commit stamps many hosts with one value (a pool's policy, the sweeper after an outage): a replica's
    poller pages through all of them, not just the first page."""
    with controller.client() as client:
        for i in range(7):
            register(client, controller.bootstrap_token, f"many-{i}")
    other = Database(controller.db.url, pool_size=2, change_poll_s=3600)  # another replica, polled by hand
    heard: dict[int, int] = {}
    other.changes.subscribe(heard.update)
    other.changes.POLL_BATCH = 3
    try:
        with controller.db.session() as session:
            ids = list(session.scalars(select(Host.id).where(Host.hostname.like("many-%"))))
            mark_hosts_changed(session, ids)
        other.changes.poll()
        assert sorted(heard) == sorted(ids)
        assert len(set(heard.values())) == 1  # one stamp for the whole commit
        heard.clear()
        other.changes.poll()
        assert heard == {}  # read once
    finally:
        other.dispose()


def test_a_change_to_many_hosts_rebuilds_their_replies_in_bulk(controller: Controller) -> None:
    """After a change that reaches many hosts at once (the sweeper after an outage), their replies are rebuilt in
    bulk in the background, not one store read per host at its next heartbeat."""
    replies = controller.server.app.state.agent_replies  # type: ignore[attr-defined]
    replies.BULK_REBUILD_AT = 3
    names = [f"bulk-{i}" for i in range(4)]
    with controller.client() as client:
        creds = {n: register(client, controller.bootstrap_token, n) for n in names}
        for n in names:
            report(client, creds[n], synthetic_inventory(n), generation=1)
        with controller.db.session() as session:
            ids = list(session.scalars(select(Host.id).where(Host.hostname.in_(names))))
        for half in (ids[:2], ids[2:]):  # two commits, as the sweeper makes (in batches): they add up
            with controller.db.session() as session:
                mark_hosts_changed(session, half)
        deadline = time.monotonic() + 30
        while any(replies.fresh(i) is None for i in ids):
            assert time.monotonic() < deadline, "the bulk rebuild never came"
            time.sleep(0.02)
        loads = replies.loads
        for n in names:
            assert _heartbeat(client, n, creds[n]).status_code == 200
        assert replies.loads == loads  # no host needed its own rebuild


def test_the_sweeper_marks_a_silent_fleet_in_bounded_transactions(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.jobs import sweeper

    monkeypatch.setattr(sweeper, "BATCH", 2)
    commits: list[int] = []

    def on_commit(_conn: Any) -> None:
        commits.append(1)

    event.listen(controller.db.engine, "commit", on_commit)
    with controller.client() as client:
        for i in range(5):
            register(client, controller.bootstrap_token, f"silent-{i}")
    commits.clear()
    later = datetime.now(UTC) + timedelta(seconds=600)
    try:
        marked = sweeper.sweep_unreachable(controller.db, 60, now=later)
    finally:
        event.remove(controller.db.engine, "commit", on_commit)
    assert sorted(marked) == [f"silent-{i}" for i in range(5)]
    assert len(commits) >= 3  # 2 + 2 + 1 hosts, one transaction each


def test_a_new_leader_gives_every_host_one_timeout_before_marking_it(controller: Controller) -> None:
    """After a controller outage every last_seen is old though the hosts were fine: the first sweeps of a new leader
    mark nobody; once it has led for a whole heartbeat timeout, a host still silent is marked."""
    from controller.jobs.hooks import HookRegistry, JobContext
    from controller.jobs.scheduler import JobRunner

    with controller.client() as client:
        cred = register(client, controller.bootstrap_token, "quiet-1")
        assert report(client, cred, synthetic_inventory("quiet-1"), 1).status_code == 200
    with controller.db.session() as session:
        host = session.scalar(select(Host).where(Host.hostname == "quiet-1"))
        assert host is not None
        host.last_seen = datetime.now(UTC) - timedelta(hours=1)  # silent while no controller listened
    settings = controller.settings.model_copy(update={"heartbeat_timeout_s": 60.0})
    runner = JobRunner(JobContext(db=controller.db, settings=settings), HookRegistry(), ApiMetrics(controller.db))
    try:
        runner._renew()  # leadership taken now
        assert runner.leader_since is not None
        start = runner.leader_since
        assert runner.sweep(now=start) == []
        assert runner.sweep(now=start + timedelta(seconds=59)) == []
        with controller.admin() as api:
            assert api.get("/v1/hosts/quiet-1").json()["status"] == "ready"
        assert runner.sweep(now=start + timedelta(seconds=61)) == ["quiet-1"]
    finally:
        runner.leader.release()
