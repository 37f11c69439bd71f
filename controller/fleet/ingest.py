"""Agent report ingest: store an inventory (host row, one row per GPU, one per MIG instance) and
buffer heartbeat ``last_seen`` stamps.

Rows are matched by GPU UUID and MIG GPU-instance id so their ids stay stable across reports
(placement claims refer to them); rows for GPUs or instances that vanished are deleted. The diff runs on
plain rows with Core statements, writing only the rows whose columns differ (``devices.updated_at`` moves only
when the device row changed), and marks the host changed for the change feed when any row was written.

Heartbeats do not write ``hosts.last_seen`` themselves: :class:`LastSeenBuffer` keeps the newest
stamp per host in memory (and the generation of an unchanged full report) and writes them all every
``last_seen_flush_s`` (default 1 s) in one monotonic statement (``last_seen`` and ``inventory_generation``
never move backwards; on PostgreSQL one ``UPDATE ... FROM unnest(...)`` that locks its rows in id order, the
order every other multi-host writer uses). The database lags a heartbeat by at most that interval plus one
flush, far below ``heartbeat_timeout_s``, so the unreachable sweeper stays correct. A crash loses at most that
window of last-seen stamps, never a desired-state or lease write (those are written in their request).
Status changes (``unreachable``/``registered`` -> ``ready``) are written in the request.
``last_seen_flush_s: 0`` writes through.
"""

from __future__ import annotations

import logging
import threading
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, or_, select, text, update
from sqlalchemy.orm import Session, object_session

from controller.fleet.states import HOST_STATUS
from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.models import Device, Host, MigInstance
from drivers.contract.inventory import Gpu, Inventory
from drivers.contract.inventory import MigInstance as ReportedMigInstance

log = logging.getLogger("gpufabric.ingest")

_HEALTH_ORDER = ["healthy", "degraded", "unhealthy", "quarantined"]


def host_health(inventory: Inventory) -> str:
    worst = 0
    for gpu in inventory.gpus:
        worst = max(worst, _HEALTH_ORDER.index(gpu.health.state))
    return _HEALTH_ORDER[worst] if inventory.gpus else "unknown"


class DeviceConflict(Exception):
    """A reported GPU UUID is already another host's device, or listed twice: the report is refused whole."""

    def __init__(self, message: str, *, uuid: str, hosts: list[str]) -> None:
        super().__init__(message)
        self.uuid = uuid
        self.hosts = hosts


def check_device_ownership(session: Session, host: Host, inventory: Inventory, known: set[str]) -> None:
    """Raise :class:`DeviceConflict` if the report lists a UUID twice or one that belongs to another host.

    A GPU UUID is the device's identity (placement claims and leases refer to it): a GPU moves to another host
    only when an admin removes it from the first (docs/operations.md), never because an agent says so. Only
    UUIDs new to this host are looked up (none on a steady report)."""
    seen: set[str] = set()
    for gpu in inventory.gpus:
        if gpu.uuid in seen:
            raise DeviceConflict(
                f"GPU {gpu.uuid} is listed twice in the inventory of {host.hostname}",
                uuid=gpu.uuid,
                hosts=[host.hostname],
            )
        seen.add(gpu.uuid)
    new = sorted(seen - known)
    if not new:
        return
    owner = session.execute(
        select(Device.uuid, Host.hostname)
        .join(Host, Host.id == Device.host_id)
        .where(Device.uuid.in_(new), Device.host_id != host.id)
        .order_by(Device.uuid)
        .limit(1)
    ).first()
    if owner is not None:
        uuid, other = owner
        raise DeviceConflict(
            f"GPU {uuid} reported by {host.hostname} is a device of host {other}; an admin moves a GPU by "
            f"removing it from {other} first (docs/operations.md)",
            uuid=uuid,
            hosts=[host.hostname, other],
        )


def store_inventory(host: Host, inventory: Inventory, content_hash: str, generation: int, now: datetime) -> None:
    """Write the report into the host's rows. Raises :class:`DeviceConflict` (before changing anything) when a
    GPU UUID is another host's or listed twice.

    A host in a session has its device and MIG rows diffed with Core statements (two reads, then one statement
    per row that changed: a steady report of 8 GPUs whose one health flipped writes one device row); the host is
    marked changed for the change feed when any of them did. A host outside a session (bulk loading) gets its
    rows as new ORM objects."""
    session = object_session(host)
    if session is None:
        for gpu in inventory.gpus:
            device = Device(uuid=gpu.uuid, host_id=host.id, updated_at=now, **device_values(gpu))
            device.mig_instances = [
                MigInstance(gpu_instance_id=i.gpu_instance_id, **mig_values(i)) for i in gpu.mig_instances
            ]
            host.devices.append(device)
    else:
        if host.id is None:
            session.flush()
        if _store_devices(session, host, inventory, now):
            mark_hosts_changed(session, [host.id])
        session.expire(host, ["devices"])  # written by Core: an ORM read of them loads them again
    host.inventory = inventory.model_dump(mode="json")
    host.inventory_hash = content_hash
    host.inventory_generation = generation
    host.inventory_at = now
    host.agent_version = inventory.host.agent_version
    host.simulated = inventory.host.simulated
    host.health = host_health(inventory)


def device_values(gpu: Gpu) -> dict[str, Any]:
    """A GPU's device-row columns (those a report owns)."""
    return {
        "index": gpu.index,
        "model": gpu.name,
        "architecture": gpu.architecture,
        "memory_mib": gpu.memory_total_mib,
        "health": gpu.health.state,
        "mig_mode": gpu.mig.state,
        "pci_bus_id": gpu.pci.bus_id,
        "slices": [s.model_dump(mode="json") for s in gpu.slices],
        "details": {
            "compute_capability": gpu.compute_capability,
            "nvlink": gpu.nvlink.model_dump(mode="json"),
            "health": gpu.health.model_dump(mode="json"),
            "vgpu": gpu.vgpu.model_dump(mode="json") if gpu.vgpu else None,
            "compute_mode": gpu.compute_mode,
        },
    }


def mig_values(inst: ReportedMigInstance) -> dict[str, Any]:
    """A MIG instance's row columns."""
    return {
        "uuid": inst.uuid,
        "profile": inst.profile,
        "profile_id": inst.profile_id,
        "placement_start": inst.placement.start,
        "placement_size": inst.placement.size,
        "memory_mib": inst.memory_mib,
        "sm_count": inst.sm_count,
        "busy": bool(inst.processes),
    }


# Plain tables, not the mapped classes: Core statements, no ORM bulk-update bookkeeping.
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_MIGS: Table = MigInstance.__table__  # type: ignore[assignment]


def _store_devices(session: Session, host: Host, inventory: Inventory, now: datetime) -> bool:
    """Diff the host's device and MIG rows against the report; True if any row was written."""
    dev = _DEVICES.c
    mig = _MIGS.c
    devices = {r.uuid: r for r in session.execute(select(_DEVICES).where(dev.host_id == host.id))}
    check_device_ownership(session, host, inventory, set(devices))
    migs: dict[int, dict[int, Any]] = {}
    for r in session.execute(select(_MIGS).join(_DEVICES, dev.id == mig.device_id).where(dev.host_id == host.id)):
        migs.setdefault(r.device_id, {})[r.gpu_instance_id] = r
    wrote = False
    for gpu in inventory.gpus:
        values = device_values(gpu)
        row = devices.pop(gpu.uuid, None)
        if row is None:
            device_id = session.execute(
                insert(_DEVICES).values(host_id=host.id, uuid=gpu.uuid, updated_at=now, **values)
                .returning(dev.id)
            ).scalar_one()  # fmt: skip
            changed: dict[str, Any] = {}
            wrote = True
        else:
            device_id = row.id
            changed = {k: v for k, v in values.items() if row._mapping[k] != v}
        mig_changed = _store_mig(session, device_id, gpu, migs.pop(device_id, {}))
        if row is not None and (changed or mig_changed or row.updated_at is None):
            session.execute(update(_DEVICES).where(dev.id == device_id).values(**changed, updated_at=now))
            wrote = True
        wrote |= mig_changed
    gone = [r.id for r in devices.values()]
    if gone:
        session.execute(delete(_MIGS).where(mig.device_id.in_(gone)))
        session.execute(delete(_DEVICES).where(dev.id.in_(gone)))
        wrote = True
    return wrote


def _store_mig(session: Session, device_id: int, gpu: Gpu, rows: dict[int, Any]) -> bool:
    mig = _MIGS.c
    wrote = False
    for inst in gpu.mig_instances:
        values = mig_values(inst)
        row = rows.pop(inst.gpu_instance_id, None)
        if row is None:
            session.execute(insert(_MIGS).values(device_id=device_id, gpu_instance_id=inst.gpu_instance_id, **values))
            wrote = True
            continue
        changed = {k: v for k, v in values.items() if row._mapping[k] != v}
        if changed:
            session.execute(update(_MIGS).where(mig.id == row.id).values(**changed))
            wrote = True
    if rows:
        session.execute(delete(_MIGS).where(mig.id.in_([r.id for r in rows.values()])))
        wrote = True
    return wrote


class LastSeenBuffer:
    """Newest heartbeat time (and reported generation) per host id, written in batches (see module doc)."""

    BATCH = 5000

    def __init__(self, db: Database, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self._pending: dict[int, tuple[datetime, int]] = {}
        self._revive: set[int] = set()  # hosts heard from while not ``ready``: made ready at the flush
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed = 0
        table: Table = Host.__table__  # type: ignore[assignment]
        self._update = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .where(or_(table.c.last_seen.is_(None), table.c.last_seen < bindparam("b_seen")))
            .values(last_seen=bindparam("b_seen"))
        )
        self._update_generation = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .where(table.c.inventory_generation < bindparam("b_gen"))
            .values(inventory_generation=bindparam("b_gen"))
        )

    @property
    def write_through(self) -> bool:
        return self.interval_s <= 0

    def touch(self, host_id: int, at: datetime, generation: int = 0, *, revive: bool = False) -> None:
        """Buffer a report's time (and generation); ``revive``: the host is not ``ready`` (the sweeper marked it
        after an outage): the flush makes it ready, for every host heard from in that second in one statement,
        so a fleet reconnecting at once costs one write a second, not one per host."""
        with self._lock:
            if revive:
                self._revive.add(host_id)
            current = self._pending.get(host_id)
            if current is None:
                self._pending[host_id] = (at, generation)
            else:
                self._pending[host_id] = (max(at, current[0]), max(generation, current[1]))
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=_flush_loop,
                    args=(weakref.ref(self), self._stop, self.interval_s),
                    daemon=True,
                    name="gpufabric-last-seen",
                )
                self._thread.start()

    def pending(self, host_id: int) -> datetime | None:
        with self._lock:
            entry = self._pending.get(host_id)
        return entry[0] if entry else None

    def pending_generation(self, host_id: int) -> int:
        """The generation of an unchanged report not yet written (0 if none): the stale check counts it."""
        with self._lock:
            entry = self._pending.get(host_id)
        return entry[1] if entry else 0

    def flush(self) -> int:
        """Write every pending stamp; returns how many hosts. On failure the stamps are kept for the next try."""
        with self._lock:
            batch, self._pending = self._pending, {}
            revive, self._revive = self._revive, set()
        if not batch:
            return 0
        items = sorted(batch.items())
        try:
            for i in range(0, len(items), self.BATCH):
                chunk = items[i : i + self.BATCH]
                with self.db.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execute(
                            _PG_FLUSH,
                            {
                                "ids": [k for k, _ in chunk],
                                "seen": [v[0] for _, v in chunk],
                                "gen": [v[1] for _, v in chunk],
                            },
                        )
                    else:
                        conn.execute(self._update, [{"b_id": k, "b_seen": v[0]} for k, v in chunk])
                        gens = [{"b_id": k, "b_gen": v[1]} for k, v in chunk if v[1]]
                        if gens:
                            conn.execute(self._update_generation, gens)
            if revive:
                self._make_ready(sorted(revive))
        except BaseException:
            with self._lock:
                self._revive |= revive
                for k, v in batch.items():
                    current = self._pending.get(k)
                    self._pending[k] = v if current is None else (max(v[0], current[0]), max(v[1], current[1]))
            raise
        self.flushed += len(items)
        return len(items)

    def _make_ready(self, host_ids: list[int]) -> None:
        table: Table = Host.__table__  # type: ignore[assignment]
        with self.db.session() as session:
            revived = list(
                session.execute(
                    update(table)
                    .where(
                        table.c.id.in_(host_ids),
                        table.c.status.in_(HOST_STATUS.sources("ready")),
                        table.c.inventory_hash.is_not(None),
                    )
                    .values(status="ready")
                    .returning(table.c.id)
                ).scalars()
            )
            mark_hosts_changed(session, revived)  # placement may use them again; their replies are rebuilt
        if revived:
            log.info("%d host(s) reporting again are ready", len(revived))

    def close(self) -> None:
        """Stop the flusher and write what is pending (app shutdown)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("could not write buffered heartbeat times at shutdown")


# One statement per flush. The locking sub-select takes the rows in id order, the order every multi-host writer
# uses (controller.store.changes), so a flush never deadlocks with a lease or admin transaction.
_PG_FLUSH = text(
    """
    UPDATE hosts AS h
    SET last_seen = GREATEST(COALESCE(h.last_seen, v.seen), v.seen),
        inventory_generation = GREATEST(h.inventory_generation, v.gen)
    FROM unnest(CAST(:ids AS integer[]), CAST(:seen AS timestamptz[]), CAST(:gen AS integer[])) AS v(id, seen, gen)
    WHERE h.id = v.id
      AND h.id IN (SELECT id FROM hosts WHERE id = ANY(CAST(:ids AS integer[])) ORDER BY id FOR NO KEY UPDATE)
    """
)


def _flush_loop(ref: weakref.ref[LastSeenBuffer], stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        buffer = ref()
        if buffer is None:
            return
        try:
            buffer.flush()
        except Exception:
            log.exception("could not write buffered heartbeat times; retrying")
        del buffer
