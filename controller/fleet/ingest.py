"""Agent report ingest: store an inventory (host row, one row per GPU, one per MIG instance) and
buffer heartbeat ``last_seen`` stamps.

Rows are matched by GPU UUID and MIG GPU-instance id so their ids stay stable across reports
(placement claims refer to them); rows for GPUs or instances that vanished are deleted. Columns are
only assigned when their value differs, so the ORM issues no UPDATE for an unchanged device or MIG
instance (``devices.updated_at`` moves only when the device row changed).

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

from sqlalchemy import Table, bindparam, or_, select, text, update
from sqlalchemy.orm import Session, object_session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.models import Device, Host, MigInstance
from drivers.contract.inventory import Gpu, Inventory

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
    GPU UUID is another host's or listed twice."""
    session = object_session(host)
    if session is not None and host.id is not None and "devices" not in host.__dict__:
        # two queries (devices, then their MIG instances) instead of 1 + one per GPU
        devices = session.scalars(
            select(Device)
            .where(Device.host_id == host.id)
            .options(selectinload(Device.mig_instances))
            .order_by(Device.index)
        ).all()
        set_committed_value(host, "devices", list(devices))
    if session is not None:
        check_device_ownership(session, host, inventory, {d.uuid for d in host.devices})
    host.inventory = inventory.model_dump(mode="json")
    host.inventory_hash = content_hash
    host.inventory_generation = generation
    host.inventory_at = now
    host.agent_version = inventory.host.agent_version
    host.simulated = inventory.host.simulated
    host.health = host_health(inventory)
    by_uuid = {d.uuid: d for d in host.devices}
    seen: set[str] = set()
    for gpu in inventory.gpus:
        seen.add(gpu.uuid)
        device = by_uuid.get(gpu.uuid)
        if device is None:
            device = Device(uuid=gpu.uuid, index=gpu.index, model=gpu.name, memory_mib=gpu.memory_total_mib)
            host.devices.append(device)
        _update_device(device, gpu, now)
    for device in list(host.devices):
        if device.uuid not in seen:
            host.devices.remove(device)


def _set(obj: Any, **values: Any) -> bool:
    """Assign only the attributes whose value differs; True if any did."""
    changed = False
    for key, value in values.items():
        if getattr(obj, key) != value:
            setattr(obj, key, value)
            changed = True
    return changed


def _update_device(device: Device, gpu: Gpu, now: datetime) -> None:
    changed = _set(
        device,
        index=gpu.index,
        model=gpu.name,
        architecture=gpu.architecture,
        memory_mib=gpu.memory_total_mib,
        health=gpu.health.state,
        mig_mode=gpu.mig.state,
        pci_bus_id=gpu.pci.bus_id,
        slices=[s.model_dump(mode="json") for s in gpu.slices],
        details={
            "compute_capability": gpu.compute_capability,
            "nvlink": gpu.nvlink.model_dump(mode="json"),
            "health": gpu.health.model_dump(mode="json"),
            "vgpu": gpu.vgpu.model_dump(mode="json") if gpu.vgpu else None,
            "compute_mode": gpu.compute_mode,
        },
    )
    by_gi = {m.gpu_instance_id: m for m in device.mig_instances}
    seen: set[int] = set()
    for inst in gpu.mig_instances:
        seen.add(inst.gpu_instance_id)
        row = by_gi.get(inst.gpu_instance_id)
        if row is None:
            row = MigInstance(gpu_instance_id=inst.gpu_instance_id)
            device.mig_instances.append(row)
            changed = True
        changed |= _set(
            row,
            uuid=inst.uuid,
            profile=inst.profile,
            profile_id=inst.profile_id,
            placement_start=inst.placement.start,
            placement_size=inst.placement.size,
            memory_mib=inst.memory_mib,
            sm_count=inst.sm_count,
            busy=bool(inst.processes),
        )
    for row in list(device.mig_instances):
        if row.gpu_instance_id not in seen:
            device.mig_instances.remove(row)
            changed = True
    if changed or device.updated_at is None:
        device.updated_at = now


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
                    .where(table.c.id.in_(host_ids), table.c.status != "ready", table.c.inventory_hash.is_not(None))
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
