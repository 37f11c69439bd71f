"""Functional guards for the optimised ingest path: the auth cache, the batched heartbeat ``last_seen``
and device rows left alone by unchanged reports (see controller/fleet/ingest.py, controller/auth/cache.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, update

from controller.auth.cache import AUTH_CACHE, AuthCache, warm_agent_credentials
from controller.auth.tokens import agent_credential_parts, live_agent_credentials
from controller.fleet.ingest import LastSeenBuffer
from controller.fleet.replies import AgentReplyCache, ReplyEntry, build_entry
from controller.jobs.sweeper import sweep_unreachable
from controller.store.models import AgentCredential, Device, FleetClock, Host
from drivers.contract.protocol import Heartbeat, inventory_content_hash
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory


def _heartbeat(client: httpx.Client, hostname: str, credential: str, generation: int = 1) -> httpx.Response:
    inv = synthetic_inventory(hostname)
    body = Heartbeat(generation=generation, inventory_hash=inventory_content_hash(inv)).model_dump(mode="json")
    return client.post(f"/v1/agents/{hostname}/heartbeat", json=body, headers={"Authorization": f"Bearer {credential}"})


@pytest.fixture
def short_auth_ttl() -> Iterator[float]:
    """Both cache lifetimes short: a credential revoked by raw SQL (no change-feed stamp) is refused within it."""
    before = AUTH_CACHE.ttl_s, AUTH_CACHE.agent_ttl_s
    AUTH_CACHE.ttl_s = AUTH_CACHE.agent_ttl_s = 0.5
    try:
        yield 0.5
    finally:
        AUTH_CACHE.ttl_s, AUTH_CACHE.agent_ttl_s = before


def test_rotated_credential_refused_at_once(controller: Controller) -> None:
    with controller.client() as client:
        old = register(client, controller.bootstrap_token, "rot-1")
        assert report(client, old, synthetic_inventory("rot-1"), 1).status_code == 200
        assert _heartbeat(client, "rot-1", old).status_code == 200  # now cached
        new = register(client, old, "rot-1")  # rotation (own credential) revokes `old` in this process
        assert_problem(_heartbeat(client, "rot-1", old), 401, "unauthorized")
        assert _heartbeat(client, "rot-1", new).status_code == 200
        # a wrong secret with a cached key id never hits the cache
        key_prefix = new.rsplit("_", 1)[0]
        assert_problem(_heartbeat(client, "rot-1", key_prefix + "_" + "x" * 43), 401, "unauthorized")


def test_credential_revoked_elsewhere_refused_within_ttl(controller: Controller, short_auth_ttl: float) -> None:
    with controller.client() as client:
        cred = register(client, controller.bootstrap_token, "rev-1")
        assert report(client, cred, synthetic_inventory("rev-1"), 1).status_code == 200
        assert _heartbeat(client, "rev-1", cred).status_code == 200
        # Another process (CLI, another worker) revokes it: plain SQL, no ORM event in this process.
        with controller.db.engine.begin() as conn:
            conn.execute(update(AgentCredential).values(revoked_at=datetime.now(UTC)))
        time.sleep(short_auth_ttl + 0.1)
        assert_problem(_heartbeat(client, "rev-1", cred), 401, "unauthorized")


def test_deleted_host_credential_refused_at_once(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        cred = register(client, controller.bootstrap_token, "del-1")
        assert report(client, cred, synthetic_inventory("del-1"), 1).status_code == 200
        assert _heartbeat(client, "del-1", cred).status_code == 200
        assert api.delete("/v1/hosts/del-1").status_code == 204
        assert_problem(_heartbeat(client, "del-1", cred), 401, "unauthorized")


def test_heartbeat_last_seen_reaches_the_sweeper(controller: Controller) -> None:
    buffer: LastSeenBuffer = controller.server.app.state.last_seen
    with controller.client() as client:
        cred = register(client, controller.bootstrap_token, "hb-1")
        assert report(client, cred, synthetic_inventory("hb-1"), 1).status_code == 200
        stale = datetime.now(UTC) - timedelta(seconds=600)
        with controller.db.engine.begin() as conn:
            conn.execute(update(Host).where(Host.hostname == "hb-1").values(last_seen=stale))
        before = datetime.now(UTC)
        assert _heartbeat(client, "hb-1", cred).status_code == 200
        buffer.flush()  # what the flusher thread does every last_seen_flush_s
        with controller.db.session() as session:
            seen = session.scalar(select(Host.last_seen).where(Host.hostname == "hb-1"))
        assert seen is not None and seen >= before - timedelta(seconds=1)
        assert "hb-1" not in sweep_unreachable(controller.db, 60)
        # An older stamp never moves last_seen backwards.
        with controller.db.session() as session:
            host_id = session.scalar(select(Host.id).where(Host.hostname == "hb-1"))
        assert host_id is not None
        buffer.touch(host_id, stale)
        buffer.flush()
        with controller.db.session() as session:
            assert session.scalar(select(Host.last_seen).where(Host.id == host_id)) == seen


def test_unreachable_hosts_reporting_again_are_made_ready_by_one_flush(controller: Controller) -> None:
    """A fleet coming back after an outage: no host's heartbeat writes in its request; the next flush makes every
    one of them ready in one statement (and stamps them for placement and the reply caches)."""
    buffer: LastSeenBuffer = controller.server.app.state.last_seen
    names = [f"hb-{i}" for i in range(3)]
    with controller.client() as client, controller.admin() as api:
        creds = {n: register(client, controller.bootstrap_token, n) for n in names}
        for n in names:
            assert report(client, creds[n], synthetic_inventory(n), 1).status_code == 200
        later = datetime.now(UTC) + timedelta(seconds=600)
        assert sorted(sweep_unreachable(controller.db, 60, now=later)) == names
        writes: list[str] = []

        def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if threading.current_thread().name != "gpufabric-last-seen" and not statement.lstrip().startswith("SELECT"):
                writes.append(statement)

        event.listen(controller.db.engine, "before_cursor_execute", on_execute)
        try:
            for n in names:
                reply = _heartbeat(client, n, creds[n])
                assert reply.status_code == 200
        finally:
            event.remove(controller.db.engine, "before_cursor_execute", on_execute)
        assert [w for w in writes if "UPDATE" in w or "INSERT" in w] == []
        buffer.flush()  # what the flusher thread does every last_seen_flush_s
        assert {api.get(f"/v1/hosts/{n}").json()["status"] for n in names} == {"ready"}


def test_unchanged_report_leaves_device_rows_alone(controller: Controller) -> None:
    def devices() -> dict[str, tuple[int, datetime, str]]:
        with controller.db.session() as session:
            return {d.uuid: (d.id, d.updated_at, d.health) for d in session.scalars(select(Device))}

    with controller.client() as client:
        cred = register(client, controller.bootstrap_token, "inv-1")
        assert report(client, cred, synthetic_inventory("inv-1", gpus=4), 1).json()["outcome"] == "stored"
        first = devices()
        assert len(first) == 4
        time.sleep(0.01)
        assert report(client, cred, synthetic_inventory("inv-1", gpus=4), 2).json()["outcome"] == "unchanged"
        assert devices() == first
        # a content change rewrites the host; device rows whose values are unchanged keep their stamp
        changed = synthetic_inventory("inv-1", gpus=4)
        changed.gpus[0].health.state = "degraded"
        assert report(client, cred, changed, 3).json()["outcome"] == "stored"
        after = devices()
        assert {u: v[0] for u, v in after.items()} == {u: v[0] for u, v in first.items()}  # ids stable
        assert after["GPU-inv-1-0"][2] == "degraded" and after["GPU-inv-1-0"][1] > first["GPU-inv-1-0"][1]
        for uuid in ("GPU-inv-1-1", "GPU-inv-1-2", "GPU-inv-1-3"):
            assert after[uuid] == first[uuid]


def _agent_statements(controller: Controller) -> tuple[list[str], Any]:
    seen: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(controller.db.engine, "before_cursor_execute", on_execute)
    return seen, on_execute


def test_credentials_loaded_in_bulk_authenticate_without_a_lookup(controller: Controller) -> None:
    """After a restart (the cache emptied), the bulk load answers every agent's first request; a credential reset
    or rotation afterwards is still refused at once, and a wrong secret never matches a loaded key."""
    with controller.client() as client, controller.admin() as api:
        creds = {name: register(client, controller.bootstrap_token, name) for name in ("warm-1", "warm-2", "warm-3")}
        for name, cred in creds.items():
            assert report(client, cred, synthetic_inventory(name), 1).status_code == 200
        AUTH_CACHE.clear()
        assert warm_agent_credentials(controller.db, controller.server.app.state.auth_feed) >= 3
        seen, listener = _agent_statements(controller)
        try:
            before = AUTH_CACHE.warm_hits
            for name, cred in creds.items():
                r = _heartbeat(client, name, cred)
                assert r.status_code == 200, r.text
        finally:
            event.remove(controller.db.engine, "before_cursor_execute", listener)
        assert AUTH_CACHE.warm_hits == before + 3
        assert not [s for s in seen if "agent_credentials" in s]
        # a wrong secret under a loaded key id
        AUTH_CACHE.clear()
        warm_agent_credentials(controller.db, controller.server.app.state.auth_feed)
        key_prefix = creds["warm-1"].rsplit("_", 1)[0]
        assert_problem(_heartbeat(client, "warm-1", key_prefix + "_" + "x" * 43), 401, "unauthorized")
        # an admin's reset and the agent's own rotation drop the loaded credential
        assert api.post("/v1/hosts/warm-2/credential:reset", json={"reason": "re-imaged"}).status_code == 200
        assert_problem(_heartbeat(client, "warm-2", creds["warm-2"]), 401, "unauthorized")
        new = register(client, creds["warm-3"], "warm-3")
        assert_problem(_heartbeat(client, "warm-3", creds["warm-3"]), 401, "unauthorized")
        assert _heartbeat(client, "warm-3", new).status_code == 200


def test_bulk_load_skips_hosts_changed_while_it_ran(controller: Controller) -> None:
    """Rows read before a credential rotation that the change feed announced during the load are not loaded."""
    cache = AuthCache(ttl_s=0.5, agent_ttl_s=3600)
    feed = cache.change_listener(since=controller.db.changes.clock())
    controller.db.changes.subscribe(feed, credentials=True)
    with controller.client() as client:
        old = register(client, controller.bootstrap_token, "race-1")
        since = controller.db.changes.clock()
        with controller.db.session() as session:
            stale_rows = live_agent_credentials(session)  # still holds `old` as live
        register(client, old, "race-1")  # rotates: `old` revoked, the host stamped and announced at once
    assert cache.warm_agents(stale_rows, since, feed) == len(stale_rows) - 1
    key_id, secret = agent_credential_parts(old) or ("", "")
    assert cache.warm_agent(key_id, secret) is None


def _as_stored(entry: ReplyEntry) -> tuple[Any, ...]:
    return (entry.seq, entry.status, entry.generation, entry.inventory_hash, entry.desired_json, entry.tasks_json)


def test_changed_report_carries_the_reply_over_without_a_store_read(controller: Controller) -> None:
    """A changed report of a host nothing else changed: its reply entry is carried over (the commit's stamp shows
    the host's previous stamp was the entry's) and equals what the store gives; after an admin's change the
    entry is built from the store again and holds the new desired state."""
    replies: AgentReplyCache = controller.server.app.state.agent_replies
    with controller.client() as client, controller.admin() as api:
        cred = register(client, controller.bootstrap_token, "carry-1")
        assert report(client, cred, synthetic_inventory("carry-1"), 1).status_code == 200
        assert _heartbeat(client, "carry-1", cred).status_code == 200  # the entry is current
        patched = replies.patched
        assert report(client, cred, synthetic_inventory("carry-1", health="degraded"), 2).status_code == 200
        assert replies.patched == patched + 1
        with controller.db.session() as session:
            host_id = session.scalar(select(Host.id).where(Host.hostname == "carry-1"))
        assert host_id is not None
        carried = replies.fresh(host_id)
        assert carried is not None
        with controller.db.session() as session:
            stored = build_entry(session, host_id)
        assert stored is not None and _as_stored(carried) == _as_stored(stored)
        sharing = {"config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [
            {"name": "nvidia.com/gpu", "replicas": 4}]}}}}  # fmt: skip
        assert api.put("/v1/hosts/carry-1/desired", json={"sharing": sharing}).status_code == 200
        reply = report(client, cred, synthetic_inventory("carry-1"), 3)
        assert reply.status_code == 200
        assert replies.patched == patched + 1  # rebuilt, not carried
        assert reply.json()["desired"]["sharing"] == sharing


def test_a_change_not_yet_heard_is_never_carried_over() -> None:
    """The rule itself: carried over only when the host's stamp before this commit is the entry's own."""

    class _Changes:
        def subscribe(self, _listener: Any) -> None:
            pass

    class _Db:
        changes = _Changes()

    cache = AgentReplyCache(_Db())  # type: ignore[arg-type]
    before = ReplyEntry(
        seq=5, host_id=1, hostname="h", status="ready", generation=1, inventory_hash="a", applied=None,
        desired_json=b"{}", tasks_json=b"[]",
    )  # fmt: skip
    kwargs: dict[str, Any] = {"inventory_hash": "b", "generation": 2, "applied": None}
    assert cache.after_report(before, (7, {1: 6}), **kwargs) is None  # another writer stamped 6 in between
    leased = ReplyEntry(**{**before.__dict__, "leased": True})
    assert cache.after_report(leased, (7, {1: 5}), **kwargs) is None
    carried = cache.after_report(before, (7, {1: 5}), **kwargs)
    assert carried is not None and (carried.seq, carried.inventory_hash, carried.generation) == (7, "b", 2)


def test_a_host_change_keeps_its_agent_credential_cached(controller: Controller) -> None:
    """A changed report, a lease's claim or an admin's drain changes the host but not its credential: the agent's
    next request authenticates from the cache, without reading ``agent_credentials``; a reset still drops it, on
    this replica at once and on another replica (raw SQL here: only the poller sees it) within a poll."""
    with controller.client() as client, controller.admin() as api:
        cred = register(client, controller.bootstrap_token, "keep-1")
        assert report(client, cred, synthetic_inventory("keep-1"), 1).status_code == 200
        assert _heartbeat(client, "keep-1", cred).status_code == 200  # cached now
        assert report(client, cred, synthetic_inventory("keep-1", health="degraded"), 2).status_code == 200
        assert api.post("/v1/hosts/keep-1/drain", json={"reason": "maintenance"}).status_code == 200
        seen, listener = _agent_statements(controller)
        try:
            assert _heartbeat(client, "keep-1", cred, generation=2).status_code == 200
        finally:
            event.remove(controller.db.engine, "before_cursor_execute", listener)
        assert not [s for s in seen if "agent_credentials" in s], seen
        # Revoked by another process: no ORM event here, only the credential stamp the poller reads.
        with controller.db.engine.begin() as conn:
            host_id = conn.execute(select(Host.id).where(Host.hostname == "keep-1")).scalar_one()
            conn.execute(update(AgentCredential).where(AgentCredential.host_id == host_id).values(
                revoked_at=datetime.now(UTC)))  # fmt: skip
            stamp = conn.execute(
                update(FleetClock).where(FleetClock.name == "hosts").values(value=FleetClock.value + 1)
                .returning(FleetClock.value)
            ).scalar_one()  # fmt: skip
            conn.execute(update(Host).where(Host.id == host_id).values(change_seq=stamp, credential_seq=stamp))
        controller.db.changes.poll()
        assert_problem(_heartbeat(client, "keep-1", cred, generation=2), 401, "unauthorized")
