"""This replica's placement index: the engine's view of the fleet, built from the store and kept current.

Writes on this replica update it directly (claims, releases, inventory ingest, drain/quarantine); every other
change reaches it through the store's host change feed (:mod:`controller.store.changes`): each committed change
names its hosts and their new ``change_seq``, and :meth:`PlacementIndex.sync` reloads only those hosts
(O(changes), not O(hosts)). It runs before a refusal is returned (polling the feed first) and at most every
``SYNC_INTERVAL_S`` before a decision. A full comparison of every host's signature runs at most every
``FULL_SYNC_INTERVAL_S`` as a safety net (and notices deleted hosts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer, selectinload

from controller.backends.contract import Capabilities
from controller.leases.fleet import allocation_from_dict, apply_claim, to_placement_host
from controller.placement import Claim, Engine
from controller.store.db import Database
from controller.store.models import Device, Lease, SliceClaim
from controller.store.models import Host as HostRow

SYNC_INTERVAL_S = 1.0
FULL_SYNC_INTERVAL_S = 60.0
REFRESH_BATCH = 5000


@dataclass(frozen=True)
class _LoadedHost:
    id: int
    hostname: str
    signature: tuple[Any, ...]
    change_seq: int


class PlacementIndex:
    """The engine and what it was loaded from: each host's id, name, signature and change stamp."""

    def __init__(self, db: Database, engine: Engine, capabilities: Callable[[str], Capabilities | None]) -> None:
        self.db = db
        self.engine = engine
        self.capabilities = capabilities  # a backend kind's declared capabilities
        self._signatures: dict[int, tuple[Any, ...]] = {}
        self._names: dict[int, str] = {}
        self._ids: dict[str, int] = {}  # the reverse of _names: a claim looks its hosts up in O(1)
        self._sync_lock = threading.Lock()
        self._last_sync = 0.0
        self._last_full_sync = 0.0
        # change_seq of each host as loaded into the index, and hosts changed since (from the change feed)
        self._loaded_seq: dict[int, int] = {}
        self._dirty: dict[int, int] = {}
        self._dirty_lock = threading.Lock()

    def load(self) -> None:
        """Build the index from the store: every host, device, MIG instance and live claim."""
        self.db.changes.subscribe(self._on_host_changes)
        with self._sync_lock:
            self.refresh(None)
            self._last_sync = self._last_full_sync = time.monotonic()

    def _on_host_changes(self, changed: dict[int, int]) -> None:
        with self._dirty_lock:
            for hid, seq in changed.items():
                if seq > self._loaded_seq.get(hid, -1) and seq > self._dirty.get(hid, -1):
                    self._dirty[hid] = seq

    def host_id(self, hostname: str) -> int | None:
        return self._ids.get(hostname)

    def ids_of(self, hostnames: Iterable[str]) -> list[int]:
        return [self._ids[n] for n in hostnames if n in self._ids]

    def refresh(self, host_ids: Iterable[int] | None) -> None:
        """Reload hosts (all if None) from the store, with their live claims, into the engine.

        Hosts are read in batches of ``REFRESH_BATCH`` (without their stored inventory document), so building the
        index of a 100,000-host fleet never holds more than one batch of ORM rows."""
        ids = None if host_ids is None else sorted(set(host_ids))
        if ids is not None and not ids:
            return
        if ids is None:
            with self.db.session() as session:
                wanted = list(session.scalars(select(HostRow.id).order_by(HostRow.id)))
        else:
            wanted = ids
        hosts: dict[str, Any] = {}
        rows: list[_LoadedHost] = []
        for i in range(0, len(wanted), REFRESH_BATCH):
            with self.db.session() as session:
                stmt = (
                    select(HostRow)
                    .options(defer(HostRow.inventory), selectinload(HostRow.devices).selectinload(Device.mig_instances))
                    .where(HostRow.id.in_(wanted[i : i + REFRESH_BATCH]))
                    .order_by(HostRow.id)  # the index breaks ties by insertion order: keep it the hosts' order
                )
                for r in session.scalars(stmt).unique():
                    hosts[r.hostname] = to_placement_host(r, self.capabilities)
                    rows.append(_LoadedHost(r.id, r.hostname, _signature(r), r.change_seq))
        with self.db.session() as session:
            live = select(SliceClaim.lease_id).where(SliceClaim.released_at.is_(None))
            if ids is not None:
                live = live.where(SliceClaim.host_id.in_(ids))
            leases = list(session.scalars(select(Lease).where(Lease.id.in_(live.distinct()))))
            claims = []
            for lease in leases:
                allocs = [allocation_from_dict(a) for a in lease.allocations]
                for h in {a.host_id for a in allocs}:
                    if h in hosts:
                        apply_claim(hosts[h], lease.id, allocs)
                claims.append(Claim(lease.id, lease.tenant, allocs, []))
        found = {lh.id for lh in rows}
        for lh in rows:
            self.engine.upsert_host(hosts[lh.hostname])
            self._signatures[lh.id] = lh.signature
            old = self._names.get(lh.id)
            if old is not None and old != lh.hostname:
                self._ids.pop(old, None)
            self._names[lh.id] = lh.hostname
            self._ids[lh.hostname] = lh.id
            with self._dirty_lock:
                self._loaded_seq[lh.id] = lh.change_seq
                if self._dirty.get(lh.id, -1) <= lh.change_seq:
                    self._dirty.pop(lh.id, None)
        if ids is None:
            gone = set(self._names) - found
        else:
            gone = set(ids) - found
        for hid in gone:
            name = self._names.pop(hid, None)
            if name is not None and self._ids.get(name) == hid:
                del self._ids[name]
            self._signatures.pop(hid, None)
            with self._dirty_lock:
                self._loaded_seq.pop(hid, None)
                self._dirty.pop(hid, None)
            if name is not None and name in self.engine.index.hosts:
                self.engine.remove_host(name)
        for c in claims:
            self.engine.adopt(c)

    def sync(self, *, force: bool = False, min_interval_s: float = SYNC_INTERVAL_S) -> int:
        """Reload the hosts changed in the store since the index loaded them; returns how many.

        This replica's own commits mark their hosts at once, so a decision always sees them; other replicas'
        arrive through the change feed's poller, or are polled here when the last poll is older than
        ``min_interval_s`` (``force``: now)."""
        with self._sync_lock:
            feed = self.db.changes
            if force or time.monotonic() - self._last_sync >= min_interval_s:
                feed.poll()
                self._last_sync = time.monotonic()
            with self._dirty_lock:
                changed = set(self._dirty)
            if time.monotonic() - self._last_full_sync >= FULL_SYNC_INTERVAL_S:
                changed.update(self._full_scan())
                self._last_full_sync = time.monotonic()
            if changed:
                self.refresh(changed)
            return len(changed)

    def _full_scan(self) -> list[int]:
        """Hosts whose signature differs from the index's, and hosts deleted from the store."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    HostRow.id,
                    HostRow.placement_version,
                    HostRow.inventory_hash,
                    HostRow.status,
                    HostRow.admin_state,
                    HostRow.pool_id,
                )
            ).all()
        current = {r[0]: tuple(r[1:]) for r in rows}
        changed = [hid for hid, sig in current.items() if self._signatures.get(hid) != sig]
        changed += [hid for hid in self._signatures if hid not in current]
        return changed

    def adopt_own_commit(self, ids: Iterable[int]) -> None:
        """Our own write, just committed on this thread: the index already reflects it, so it must not count as
        a change to reload, unless another writer changed the host since the index loaded it.

        The change feed bumped each host's ``placement_version`` by one at that commit; the signature's copy
        follows (the store's value, mirrored, not a second bump), so the full scan does not reload the host."""
        stamp = self.db.changes.last_commit_stamp()
        if stamp is None:
            return
        seq, previous = stamp
        with self._dirty_lock:
            for hid in ids:
                before = previous.get(hid)
                if before is None or before > self._loaded_seq.get(hid, -1):
                    continue  # someone else's change came first: leave it to sync
                self._loaded_seq[hid] = seq
                if self._dirty.get(hid, -1) <= seq:
                    self._dirty.pop(hid, None)
                sig = self._signatures.get(hid)
                if sig is not None:
                    self._signatures[hid] = (sig[0] + 1, *sig[1:])


def _signature(row: HostRow) -> tuple[Any, ...]:
    return (row.placement_version, row.inventory_hash, row.status, row.admin_state, row.pool_id)
