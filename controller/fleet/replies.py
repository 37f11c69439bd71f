"""What an agent's heartbeat is answered with, cached per host so an unchanged heartbeat costs no store access.

An entry holds the host's reply parts (desired state and pending tasks, serialised once) and the few columns a
heartbeat is checked against (status, inventory hash and generation, the applied state last recorded). It is
keyed by the host's ``change_seq`` (:mod:`controller.store.changes`): every write that can change a reply
(pool policy, overrides, leases, tasks, status, inventory) stamps the host, this replica hears of it at once
(its own commits) or within one poll of the change feed (other replicas), and the next heartbeat rebuilds the
entry from the store. An entry is only ever as old as the stamp it was built at, because the stamp is read
before everything else.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from controller.fleet.desired import effective_desired, pending_tasks
from controller.store.changes import DELETED
from controller.store.db import Database
from controller.store.models import AppliedStatus, DesiredOverride, Host, HostTask, Pool, SliceClaim
from drivers.contract.protocol import PROTOCOL_VERSION, AppliedState, DesiredState, desired_state_revision

log = logging.getLogger("gpufabric.fleet.replies")


def applied_key(applied: AppliedState | AppliedStatus | None) -> tuple[str, bool, str, float] | None:
    if applied is None:
        return None
    return (applied.revision, bool(applied.ok), applied.message, _epoch(applied.at))


def _epoch(at: datetime) -> float:
    return at.timestamp()


@dataclass
class ReplyEntry:
    seq: int
    host_id: int
    hostname: str
    status: str
    generation: int
    inventory_hash: str | None
    applied: tuple[str, bool, str, float] | None
    desired_json: bytes
    tasks_json: bytes
    leased: bool = False  # leases hold slices here (some may wait for MIG instances this host reports)

    @property
    def needs_status_write(self) -> bool:
        """A host that has reported an inventory but is not ``ready`` becomes ready on its next report."""
        return self.inventory_hash is not None and self.status != "ready"

    def reply(
        self,
        report_interval_s: float,
        *,
        generation: int | None = None,
        inventory_wanted: bool = False,
        outcome: str | None = None,
    ) -> bytes:
        """The ``ReportReply`` document (same fields and order as the model's JSON)."""
        return orjson.dumps(
            {
                "protocol_version": PROTOCOL_VERSION,
                "hostname": self.hostname,
                "outcome": outcome,
                "generation": self.generation if generation is None else generation,
                "inventory_wanted": inventory_wanted,
                "desired": orjson.Fragment(self.desired_json),
                "tasks": orjson.Fragment(self.tasks_json),
                "report_interval_s": report_interval_s,
            }
        )


class AgentReplyCache:
    """One replica's reply entries, kept current by the host change feed.

    A change that reaches many hosts at once (the sweeper after an outage, a pool's policy) would leave each of
    them to be rebuilt by its next heartbeat, one host at a time; past ``BULK_REBUILD_AT`` hosts dropped within
    ``BULK_WINDOW_S`` (one commit or several: the sweeper commits in batches) the cache is rebuilt in bulk in the
    background instead (:meth:`warm`). The steady trickle of single-host changes never triggers it."""

    BULK_REBUILD_AT = 1000
    BULK_WINDOW_S = 2.0

    def __init__(self, db: Database) -> None:
        self.db = db
        self._entries: dict[int, ReplyEntry] = {}
        self._heard: dict[int, int] = {}  # newest change_seq heard of per host
        self._lock = threading.Lock()
        self.loads = 0
        self.patched = 0  # entries carried over a report without a store read (after_report)
        self._window = (0.0, 0)  # (start, entries dropped since)
        self._rebuilding = threading.Event()
        db.changes.subscribe(self._on_changes)

    def _on_changes(self, changed: dict[int, int]) -> None:
        dropped = 0
        with self._lock:
            for host_id, seq in changed.items():
                heard = self._heard.get(host_id, -1)
                if seq > heard or (heard == DELETED and seq != DELETED):  # (an id reused after a delete: SQLite)
                    self._heard[host_id] = seq
                entry = self._entries.get(host_id)
                if entry is not None and entry.seq < seq:
                    del self._entries[host_id]
                    dropped += 1
        if not dropped:
            return
        now = time.monotonic()
        start, count = self._window
        if now - start > self.BULK_WINDOW_S:
            start, count = now, 0
        count += dropped
        self._window = (start, count)
        if count >= self.BULK_REBUILD_AT:
            self._window = (now, 0)
            self.rebuild_in_background("after a change to many hosts")

    def rebuild_in_background(self, why: str) -> None:
        """:meth:`warm` on a thread of its own (at start-up, after a change to many hosts); one at a time."""
        if self._rebuilding.is_set():
            return
        self._rebuilding.set()
        threading.Thread(target=self._rebuild, args=(why,), daemon=True, name="gpufabric-warm-replies").start()

    def _rebuild(self, why: str) -> None:
        try:
            started = time.monotonic()
            built = self.warm()
            log.info("agent reply cache built in bulk %s: %d hosts in %.1f s", why, built, time.monotonic() - started)
        except Exception:
            log.warning("could not build the agent reply cache in bulk; entries are built at each host's heartbeat",
                        exc_info=True)  # fmt: skip
        finally:
            self._rebuilding.clear()

    def fresh(self, host_id: int) -> ReplyEntry | None:
        """The host's entry if nothing changed since it was built."""
        entry = self._entries.get(host_id)
        if entry is None or entry.seq < self._heard.get(host_id, -1):
            return None
        return entry

    def load(self, host_id: int) -> ReplyEntry | None:
        """Build the host's entry from the store (None if the host is gone)."""
        with self.db.session() as session:
            entry = build_entry(session, host_id)
        if entry is None:
            return None
        self.loads += 1
        with self._lock:
            if entry.seq >= self._heard.get(entry.host_id, -1):
                self._entries[host_id] = entry
        return entry

    def warm(self) -> int:
        """Build, in a handful of queries, the entry of every host whose reply is the plain one (no pool policy,
        override, live claim or pending task: most of a fleet): after a restart, 100,000 agents' first
        heartbeats then need no store access either. The others are built at their first heartbeat. Returns
        how many entries were built."""
        plain_desired = DesiredState(revision=desired_state_revision(None, None)).model_dump_json().encode()
        with self.db.session() as session:
            rows = session.execute(
                select(
                    Host.id,
                    Host.hostname,
                    Host.status,
                    Host.inventory_generation,
                    Host.inventory_hash,
                    Host.change_seq,
                    Host.pool_id,
                )
            ).all()
            special = set(session.scalars(select(DesiredOverride.host_id)))
            special.update(
                session.scalars(select(SliceClaim.host_id).where(SliceClaim.released_at.is_(None)).distinct())
            )
            special.update(
                session.scalars(select(HostTask.host_id).where(HostTask.status.in_(("pending", "running"))).distinct())
            )
            pools = {
                pool_id
                for pool_id, policy in session.execute(select(Pool.id, Pool.policy))
                if (policy or {}).get("mig") or (policy or {}).get("sharing")
            }
            applied = {
                host_id: (revision, bool(ok), message, _epoch(at))
                for host_id, revision, ok, message, at in session.execute(
                    select(
                        AppliedStatus.host_id,
                        AppliedStatus.revision,
                        AppliedStatus.ok,
                        AppliedStatus.message,
                        AppliedStatus.at,
                    )
                )
            }
        built = 0
        with self._lock:
            for host_id, hostname, status, generation, inventory_hash, seq, pool_id in rows:
                if host_id in special or pool_id in pools:
                    continue
                current = self._entries.get(host_id)
                if (current is not None and current.seq >= seq) or seq < self._heard.get(host_id, -1):
                    continue
                self._entries[host_id] = ReplyEntry(
                    seq=int(seq),
                    host_id=host_id,
                    hostname=hostname,
                    status=status,
                    generation=generation,
                    inventory_hash=inventory_hash,
                    applied=applied.get(host_id),
                    desired_json=plain_desired,
                    tasks_json=b"[]",
                )
                built += 1
        return built

    def after_report(
        self,
        before: ReplyEntry | None,
        stamp: tuple[int, dict[int, int]] | None,
        *,
        inventory_hash: str,
        generation: int,
        applied: AppliedState | None,
    ) -> ReplyEntry | None:
        """The host's entry after this thread committed its inventory report, without reading the store again.

        Only when the commit's stamp shows that nothing else changed the host since ``before`` was built (the
        host's previous stamp, read under its row lock, is ``before.seq``) and no lease holds slices there (a
        leased MIG instance's desired state depends on the devices just written): the reply's desired state and
        tasks are then ``before``'s, and only the columns the report wrote differ. A commit that stamped nothing
        of the host (an unchanged report from a ready host) keeps ``before`` as it is, with the report's generation
        and applied state. None: build it from the store.
        """
        if before is None:
            return None
        if stamp is None or before.host_id not in stamp[1]:
            if self.fresh(before.host_id) is not before:
                return None
            self.note_generation(before.host_id, generation)
            if applied is not None:
                self.note_applied(before.host_id, applied)
            return before
        if before.leased:
            return None
        seq, previous = stamp
        if previous[before.host_id] != before.seq:
            return None
        entry = replace(
            before,
            seq=seq,
            status="ready",
            generation=generation,
            inventory_hash=inventory_hash,
            applied=applied_key(applied) if applied is not None else before.applied,
        )
        with self._lock:
            if seq < self._heard.get(entry.host_id, -1):
                return None  # a newer change was announced meanwhile
            self._entries[entry.host_id] = entry
        self.patched += 1
        return entry

    def note_applied(self, host_id: int, applied: AppliedState) -> None:
        """This replica wrote the host's applied state (it does not change the reply, so no stamp)."""
        entry = self._entries.get(host_id)
        if entry is not None:
            entry.applied = applied_key(applied)

    def note_generation(self, host_id: int, generation: int) -> None:
        entry = self._entries.get(host_id)
        if entry is not None and generation > entry.generation:
            entry.generation = generation

    def forget(self, host_id: int) -> None:
        with self._lock:
            self._entries.pop(host_id, None)

    def __len__(self) -> int:
        return len(self._entries)


def build_entry(session: Session, host_id: int) -> ReplyEntry | None:
    # The stamp first: whatever is read after it is at least that new.
    seq = session.scalar(select(Host.change_seq).where(Host.id == host_id))
    if seq is None:
        return None
    host = session.get(Host, host_id, options=[defer(Host.inventory)], populate_existing=True)
    if host is None:
        return None
    desired = effective_desired(session, host)
    tasks = pending_tasks(session, host.id)
    applied = session.get(AppliedStatus, host.id)
    return ReplyEntry(
        seq=int(seq),
        host_id=host.id,
        hostname=host.hostname,
        status=host.status,
        generation=host.inventory_generation,
        inventory_hash=host.inventory_hash,
        applied=applied_key(applied),
        desired_json=desired.model_dump_json().encode(),
        tasks_json=b"[" + b",".join(t.model_dump_json().encode() for t in tasks) + b"]",
        leased=bool(desired.leases),
    )
