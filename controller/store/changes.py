"""The host change feed: one path for "what a host's agent or the placement index must see has changed".

A host's *desired state* (pool policy, admin overrides, the slices leases hold there), its pending tasks and
its placement inputs (status, admin state, pool, inventory, claims) change through many writers: admin
routes, the lease service, backend syncs, the sweeper, validations. None of them bumps a version by hand any
more. Instead:

* **Writers** either change ORM rows, which :func:`_collect_orm_changes` notices after each flush (a
  ``Host`` whose placement-relevant columns changed; any ``Device``, ``HostTask``, ``DesiredOverride`` or
  ``SliceClaim`` row; a ``Pool`` whose policy changed: all its hosts), or call :func:`mark_hosts_changed`
  after a Core statement the ORM cannot see.
* **At commit** (``before_commit``) the session bumps ``hosts.placement_version`` of those hosts (this takes
  their row locks first), then advances the one ``fleet_clock`` row and stamps ``hosts.change_seq`` with its
  new value. The clock row is locked until the commit ends, so clock values become visible in increasing
  order: a reader that has seen value *v* has seen every change stamped at or below *v*. (A PostgreSQL
  sequence would not give that: ``nextval`` is not transactional, and a smaller value can commit later.)
  Lock order is always host rows, then the clock, so two committing transactions cannot deadlock on it.
* **Readers** (:class:`HostChangeFeed`, one per :class:`~controller.store.db.Database`) learn of changes two
  ways: commits made through this process's sessions are announced at once (``after_commit``), and a poller
  asks the store ``SELECT id, change_seq FROM hosts WHERE change_seq > :cursor`` every ``poll_interval_s``
  (one indexed range scan, nothing when nothing changed) for what other replicas committed. So a change made
  on replica A reaches replica B's caches within one poll interval (default 0.5 s), far inside an agent's
  report interval.

Listeners get ``{host_id: change_seq}`` and must be cheap (they run on the committing thread or the poller).
A change to a host's agent credentials (one issued, reset or revoked, the host renamed) also stamps
``hosts.credential_seq`` with the same value; listeners subscribed with ``credentials=True`` (the auth caches) hear
only those, so a claim, a report or an admin's change does not cost the host's agent a credential lookup.
A deleted host cannot be stamped: it is announced with ``change_seq`` :data:`DELETED`, at once by the process
that deleted it and by every other within ``deletion_scan_s`` (the poller compares the set of host ids).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, bindparam, event, inspect, select, text, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from controller.store.models import (
    AgentCredential,
    DesiredOverride,
    Device,
    FleetClock,
    Host,
    HostTask,
    Pool,
    SliceClaim,
)

log = logging.getLogger("gpufabric.store.changes")

_HOSTS_KEY = "gpufabric.changed_hosts"
_POOLS_KEY = "gpufabric.changed_pools"
_CREDENTIALS_KEY = "gpufabric.changed_credentials"
_STAMP_KEY = "gpufabric.change_stamp"
_DELETED_KEY = "gpufabric.deleted_hosts"
DELETED = 2**62
CLOCK = "hosts"
# Host columns whose change matters to an agent's reply or to placement. last_seen, inventory_generation and
# agent_version move on every report and change neither.
_HOST_COLUMNS = ("status", "admin_state", "health", "pool_id", "backend_id", "labels", "inventory_hash", "hostname")

Listener = Callable[[dict[int, int]], None]
# Rows that belong to one host: any change to them changes the host (an agent credential: its auth caches).
_HOST_ROWS = (Device, HostTask, DesiredOverride, SliceClaim, AgentCredential)


def mark_hosts_changed(session: Session, host_ids: Iterable[int]) -> None:
    """Record that these hosts changed in ``session``'s transaction (after a Core statement the ORM does not
    track); stamped at commit, announced after it."""
    ids = [int(h) for h in host_ids if h is not None]
    if ids:
        session.info.setdefault(_HOSTS_KEY, set()).update(ids)


def mark_pool_changed(session: Session, pool_id: int) -> None:
    """Every host of the pool changed (its policy)."""
    session.info.setdefault(_POOLS_KEY, set()).add(pool_id)


def _history_changed(obj: Any, names: Iterable[str]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _collect_orm_changes(session: Session, _flush_context: Any) -> None:
    """``after_flush``: the ORM's view of what changed (object histories are still pre-flush here)."""
    hosts: set[int] = session.info.setdefault(_HOSTS_KEY, set())
    credentials: set[int] = session.info.setdefault(_CREDENTIALS_KEY, set())
    for obj in session.new:
        if isinstance(obj, Host):
            hosts.add(obj.id)
        elif isinstance(obj, _HOST_ROWS) and obj.host_id is not None:
            hosts.add(obj.host_id)
            if isinstance(obj, AgentCredential):
                credentials.add(obj.host_id)
    for obj in session.dirty:
        if isinstance(obj, Host):
            if _history_changed(obj, _HOST_COLUMNS):
                hosts.add(obj.id)
                if _history_changed(obj, ("hostname",)):
                    credentials.add(obj.id)  # a credential's principal names its host
        elif isinstance(obj, _HOST_ROWS):
            if session.is_modified(obj, include_collections=False) and obj.host_id is not None:
                hosts.add(obj.host_id)
                if isinstance(obj, AgentCredential):
                    credentials.add(obj.host_id)
        elif isinstance(obj, Pool) and _history_changed(obj, ("policy",)):
            session.info.setdefault(_POOLS_KEY, set()).add(obj.id)
    for obj in session.deleted:
        if isinstance(obj, Host):
            session.info.setdefault(_DELETED_KEY, set()).add(obj.id)
        elif isinstance(obj, _HOST_ROWS) and obj.host_id is not None:
            hosts.add(obj.host_id)
            if isinstance(obj, AgentCredential):
                credentials.add(obj.host_id)


def _stamp(session: Session) -> None:
    """``before_commit``: bump placement_version (host row locks), advance the clock, stamp change_seq."""
    if session.in_nested_transaction():
        return
    session.flush()  # before_commit runs before the commit's own flush: collect what it would write
    ids: set[int] = session.info.pop(_HOSTS_KEY, set())
    pools: set[int] = session.info.pop(_POOLS_KEY, set())
    credentials: set[int] = session.info.pop(_CREDENTIALS_KEY, set())
    credentials.discard(None)  # type: ignore[arg-type]
    if pools:
        ids.update(session.scalars(select(Host.id).where(Host.pool_id.in_(sorted(pools)))))
    ids.discard(None)  # type: ignore[arg-type]
    if not ids:
        return
    ordered = sorted(ids)  # one lock order everywhere
    if session.get_bind().dialect.name == "postgresql":
        seq, previous = _stamp_postgresql(session, ordered)
    else:
        seq, previous = _stamp_portable(session, ordered)
    credentials &= ids
    if credentials:
        # Rare (registration, a reset, a rename): one more statement, under the row locks taken above.
        session.execute(
            update(Host)
            .where(Host.id.in_(bindparam("ids", expanding=True)))
            .values(credential_seq=seq)
            .execution_options(synchronize_session=False),
            {"ids": sorted(credentials)},
        )
    session.info[_STAMP_KEY] = (seq, previous, frozenset(credentials))


def _stamp_portable(session: Session, ordered: list[int]) -> tuple[int, dict[int, int]]:
    # Under these row locks, each host's previous stamp: a reader that loaded a host at that stamp knows this
    # commit is the only change since (see PlacementIndex.adopt_own_commit in controller.leases.index).
    result = session.execute(
        update(Host)
        .where(Host.id.in_(bindparam("ids", expanding=True)))
        .values(placement_version=Host.placement_version + 1)
        .returning(Host.id, Host.change_seq)
        .execution_options(synchronize_session=False),
        {"ids": ordered},
    )
    previous = {int(hid): int(seq) for hid, seq in result.all()}
    seq = session.execute(
        update(FleetClock)
        .where(FleetClock.name == CLOCK)
        .values(value=FleetClock.value + 1)
        .returning(FleetClock.value)
    ).scalar_one()
    session.execute(
        update(Host)
        .where(Host.id.in_(bindparam("ids", expanding=True)))
        .values(change_seq=seq)
        .execution_options(synchronize_session=False),
        {"ids": ordered},
    )
    return int(seq), previous


_PG_LOCK_HOSTS = text("SELECT id, change_seq FROM hosts WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE")
_PG_ADVANCE = text(
    """
    WITH clock AS (UPDATE fleet_clock SET value = value + 1 WHERE name = :clock RETURNING value),
         stamped AS (
             UPDATE hosts SET placement_version = placement_version + 1, change_seq = (SELECT value FROM clock)
             WHERE id = ANY(:ids)
         )
    SELECT value FROM clock
    """
)


def _stamp_postgresql(session: Session, ordered: list[int]) -> tuple[int, dict[int, int]]:
    """Two statements: lock the hosts in id order (reading their previous stamps), then advance the clock and
    stamp them in one statement."""
    previous = {int(hid): int(seq) for hid, seq in session.execute(_PG_LOCK_HOSTS, {"ids": ordered})}
    seq = session.execute(_PG_ADVANCE, {"ids": ordered, "clock": CLOCK}).scalar_one()
    return int(seq), previous


def _forget(session: Session, *_: Any) -> None:
    for key in (_HOSTS_KEY, _POOLS_KEY, _CREDENTIALS_KEY, _STAMP_KEY, _DELETED_KEY):
        session.info.pop(key, None)


class HostChangeFeed:
    """This process's view of the change feed for one database (see the module doc)."""

    POLL_BATCH = 5000

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        poll_interval_s: float = 0.5,
        deletion_scan_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.poll_interval_s = poll_interval_s
        self.deletion_scan_s = deletion_scan_s
        self._known_ids: set[int] | None = None
        self._last_scan = 0.0
        self._listeners: list[Listener] = []
        self._credential_listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._cursor: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._local = threading.local()
        event.listen(sessions, "after_flush", _collect_orm_changes)
        event.listen(sessions, "before_commit", _stamp)
        event.listen(sessions, "after_commit", self._announce_local)
        event.listen(sessions, "after_rollback", _forget)

    @property
    def cursor(self) -> int | None:
        return self._cursor

    def subscribe(self, listener: Listener, *, credentials: bool = False) -> None:
        """Call ``listener`` with ``{host_id: change_seq}`` for every change from now on; starts the poller.

        ``credentials=True``: only for changes to hosts' agent credentials (issued, reset, revoked, the host
        renamed or deleted), with ``{host_id: credential_seq}``: what an auth cache must drop."""
        with self._lock:
            if self._cursor is None:
                self._cursor = self.clock()
            (self._credential_listeners if credentials else self._listeners).append(listener)
            if self._thread is None and self.poll_interval_s > 0:
                self._thread = threading.Thread(
                    target=_poll_loop,
                    args=(weakref.ref(self), self._stop, self.poll_interval_s),
                    daemon=True,
                    name="gpufabric-change-feed",
                )
                self._thread.start()

    def clock(self) -> int:
        """The newest committed change stamp (0 on an empty fleet)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(FleetClock.value).where(FleetClock.name == CLOCK)).scalar()
        return int(value or 0)

    def poll(self) -> dict[int, int]:
        """Read what changed since the cursor (other replicas' commits included) and tell the listeners."""
        if self._cursor is None:
            return {}
        with self._poll_lock:
            changed: dict[int, int] = {}
            credentials: dict[int, int] = {}
            cursor = start = self._cursor
            # Keyset pages on (change_seq, id): one commit can stamp far more hosts than a page (a pool's policy,
            # the sweeper after an outage), and they all carry the same stamp.
            stmt = (
                select(Host.id, Host.change_seq, Host.credential_seq)
                .where(tuple_(Host.change_seq, Host.id) > tuple_(bindparam("seq"), bindparam("id")))
                .order_by(Host.change_seq, Host.id)
                .limit(self.POLL_BATCH)
            )
            after_id = DELETED  # past every id of the cursor's own stamp: those were read already
            with self.engine.connect() as conn:
                while True:
                    rows = conn.execute(stmt, {"seq": cursor, "id": after_id}).all()
                    for host_id, seq, credential_seq in rows:
                        changed[host_id] = seq
                        if credential_seq > start:  # stamped by a commit this poll is the first to see
                            credentials[host_id] = credential_seq
                    if rows:
                        cursor, after_id = rows[-1][1], rows[-1][0]
                    if len(rows) < self.POLL_BATCH:
                        break
            self._cursor = max(cursor, self._cursor)
            if time.monotonic() - self._last_scan >= self.deletion_scan_s:
                deleted = self._deleted_since_last_scan()
                changed.update(deleted)
                credentials.update(deleted)
        if changed:
            self._notify(changed)
        if credentials:
            self._notify(credentials, self._credential_listeners)
        return changed

    def _deleted_since_last_scan(self) -> dict[int, int]:
        """Hosts deleted by anyone since the last scan (one id-only index scan, every ``deletion_scan_s``)."""
        with self.engine.connect() as conn:
            ids = set(conn.execute(select(Host.id)).scalars())
        self._last_scan = time.monotonic()
        previous, self._known_ids = self._known_ids, ids
        if previous is None:
            return {}
        return dict.fromkeys(previous - ids, DELETED)

    def _announce_local(self, session: Session) -> None:
        deleted = session.info.pop(_DELETED_KEY, None)
        if deleted:
            self._notify(dict.fromkeys(deleted, DELETED))
            self._notify(dict.fromkeys(deleted, DELETED), self._credential_listeners)
        stamp = session.info.pop(_STAMP_KEY, None)
        if stamp is None:
            return
        seq, previous, credentials = stamp
        self._local.stamp = (seq, previous)
        self._notify(dict.fromkeys(previous, seq))
        if credentials:
            self._notify(dict.fromkeys(credentials, seq), self._credential_listeners)

    def last_commit_stamp(self) -> tuple[int, dict[int, int]] | None:
        """The stamp of this thread's most recent commit that changed hosts, once: ``(change_seq, {host_id:
        change_seq before it})``; None if there was none since the last call."""
        stamp: tuple[int, dict[int, int]] | None = getattr(self._local, "stamp", None)
        self._local.stamp = None
        return stamp

    def _notify(self, changed: dict[int, int], listeners: list[Listener] | None = None) -> None:
        for listener in list(self._listeners if listeners is None else listeners):
            try:
                listener(changed)
            except Exception:
                log.exception("a host change listener failed")

    def close(self) -> None:
        self._stop.set()


def _poll_loop(ref: weakref.ref[HostChangeFeed], stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        feed = ref()
        if feed is None:
            return
        try:
            feed.poll()
        except Exception:
            log.warning("could not poll the host change feed; retrying", exc_info=True)
        del feed
