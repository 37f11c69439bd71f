"""The lease service: this replica's placement engine, atomic claims in the store, provisioning, release.

Every replica has its own engine; the store arbitrates. A claim is one transaction that inserts the lease,
its transitions and one ``slice_claims`` row per claimed unit; the partial unique index on live
``(resource, slot)`` rows refuses a unit claimed twice, whichever replica claimed it first. The loser rolls
back, reloads the hosts involved from the store and decides again (``MAX_ATTEMPTS`` times, then 409).

Keeping the index current: writes on this replica update it directly (claims, releases, inventory ingest,
drain/quarantine); every other change reaches it through the store's host change feed
(:mod:`controller.store.changes`): each committed change names its hosts and their new ``change_seq``, and
:meth:`LeaseService.sync` reloads only those hosts (O(changes), not O(hosts)). It runs before a refusal is
returned (polling the feed first) and at most every ``SYNC_INTERVAL_S`` before a decision. A full comparison of
every host's signature runs at most every ``FULL_SYNC_INTERVAL_S`` as a safety net (and notices deleted hosts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, selectinload

from controller import audit
from controller.auth.tokens import Principal
from controller.backends import static as _static  # noqa: F401  (registers the static provisioner)
from controller.backends.base import ProvisionFailed, TryElsewhere, provisioner_for
from controller.leases.errors import (
    IdempotencyKeyReused,
    InvalidLeaseRequest,
    LeaseRefused,
    PlacementContended,
    QuotaExceeded,
)
from controller.leases.faults import crash_point
from controller.leases.fleet import (
    allocation_from_dict,
    allocation_to_dict,
    apply_claim,
    to_placement_host,
)
from controller.leases.lifecycle import ReleaseAndRecovery, backend_call
from controller.leases.liveness import LeaseTimeouts
from controller.leases.state import TRANSITIONAL, transition
from controller.placement import (
    Allocation,
    Claim,
    ClaimConflict,
    Decision,
    Engine,
    PlacementRequest,
    Refusal,
    parse_request,
)
from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.models import Device, Lease, Quota, SliceClaim
from controller.store.models import Host as HostRow

log = logging.getLogger("gpufabric.leases")

MAX_ATTEMPTS = 8
# How many times a lease whose backend said "try elsewhere" (e.g. Nova's No valid host) is placed again.
MAX_CANDIDATES = 3
SYNC_INTERVAL_S = 1.0
FULL_SYNC_INTERVAL_S = 60.0
QUOTA_ROWS_TTL_S = 1.0
REFRESH_BATCH = 5000
REFUSAL_SYNC_INTERVAL_S = 0.2


@dataclass(frozen=True)
class _LoadedHost:
    id: int
    hostname: str
    signature: tuple[Any, ...]
    change_seq: int


class _StoreConflict(Exception):
    pass


class _IdempotencyRace(Exception):
    pass


class _LeaseMoved(Exception):
    """The lease left ``placing`` while this replica was placing it again."""


@dataclass
class Stats:
    created: int = 0
    refused: int = 0
    conflicts_retried: int = 0
    released: int = 0


def request_hash(req: PlacementRequest) -> str:
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class LeaseService(ReleaseAndRecovery):
    def __init__(self, db: Database, *, owner: str | None = None, timeouts: LeaseTimeouts | None = None) -> None:
        self.db = db
        # The name this process writes into ``leases.owner`` while it drives a lease (its controller instance id).
        self.owner = owner or f"leases-{uuidlib.uuid4().hex[:12]}"
        self.timeouts = timeouts or LeaseTimeouts()
        # Leases this process is driving right now: an owned lease not in here was dropped (e.g. an exception).
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()
        self.engine = Engine(quota=self._quota_check)
        self.stats = Stats()
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
        self._quota_ctx = threading.local()
        self._quota_rows: dict[str, tuple[float, list[Quota]]] = {}
        self._provision_locks = [threading.RLock() for _ in range(64)]

    # --- building and keeping the index current ------------------------------------------------------------

    def load(self) -> LeaseService:
        """Build the index from the store: every host, device, MIG instance and live claim."""
        self.db.changes.subscribe(self._on_host_changes)
        with self._sync_lock:
            self._refresh(None)
            self._last_sync = self._last_full_sync = time.monotonic()
        return self

    def _on_host_changes(self, changed: dict[int, int]) -> None:
        with self._dirty_lock:
            for hid, seq in changed.items():
                if seq > self._loaded_seq.get(hid, -1) and seq > self._dirty.get(hid, -1):
                    self._dirty[hid] = seq

    def _now_expr(self, session: Session) -> ColumnElement[datetime] | datetime:
        # clock_timestamp() is the time the statement runs, not the transaction start: claim/release
        # intervals of one unit then never overlap in the history the invariant checker reads.
        if session.get_bind().dialect.name == "postgresql":
            return func.clock_timestamp()  # type: ignore[return-value]
        return datetime.now(UTC)

    def _refresh(self, host_ids: Iterable[int] | None) -> None:
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
                    hosts[r.hostname] = to_placement_host(r)
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
                self._refresh(changed)
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

    def host_changed(self, hostname: str) -> None:
        """After a write to one host (inventory, admin state, pool): reload it and finish pending leases."""
        with self.db.session() as session:
            hid = session.scalar(select(HostRow.id).where(HostRow.hostname == hostname))
        if hid is None:
            if hostname in self.engine.index.hosts:
                self.engine.remove_host(hostname)
            return
        self._refresh([hid])
        self._complete_pending(hid)

    def hosts_changed(self, hostnames: Iterable[str]) -> None:
        for name in hostnames:
            self.host_changed(name)

    # --- quotas --------------------------------------------------------------------------------------------

    def _quota_check(self, tenant: str, kind: str, model: str, units: int) -> str | None:
        ctx: dict[tuple[str, str], tuple[int, int]] | None = getattr(self._quota_ctx, "limits", None)
        if not ctx:
            return None
        for key in ((kind, model), (kind, "*")):
            entry = ctx.get(key)
            if entry is not None and entry[1] + units > entry[0]:
                return f"{kind}:{key[1]} (limit {entry[0]}, in use {entry[1]}, asked {units})"
        return None

    def quotas_changed(self, tenant: str) -> None:
        """This replica changed the tenant's limits: decide with them at once."""
        self._quota_rows.pop(tenant, None)

    def _load_quota(self, tenant: str) -> None:
        # The tenant's limit rows are kept QUOTA_ROWS_TTL_S (most tenants have none: no usage query then); usage
        # is read for every decision. The claim transaction checks both against the store again, so a limit
        # changed on another replica a moment ago is never overrun, only explained a moment later.
        cached = self._quota_rows.get(tenant)
        if cached is None or cached[0] < time.monotonic():
            with self.db.session() as session:
                rows = list(session.scalars(select(Quota).where(Quota.tenant == tenant)))
            cached = (time.monotonic() + QUOTA_ROWS_TTL_S, rows)
            self._quota_rows[tenant] = cached
        quotas = cached[1]
        limits: dict[tuple[str, str], tuple[int, int]] = {}
        if quotas:
            with self.db.session() as session:
                usage = usage_by_kind_model(session, tenant)
            for q in quotas:
                limits[(q.kind, q.model)] = (q.limit, quota_used(q, usage))
        self._quota_ctx.limits = limits

    # --- deciding and claiming -----------------------------------------------------------------------------

    def parse(self, body: dict[str, Any]) -> PlacementRequest:
        try:
            return parse_request(body)
        except ValidationError as exc:
            errors = [
                {
                    "loc": [str(p) for p in e.get("loc", ())],
                    "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", "")),
                }
                for e in exc.errors()
            ]
            first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
            where = ".".join(first["loc"])
            message = f"{where}: {first['msg']}" if where else str(first["msg"])
            raise InvalidLeaseRequest(message, errors=errors) from None

    def _decide(
        self,
        req: PlacementRequest,
        tenant: str,
        *,
        dry_run: bool = False,
        explain: bool = False,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        self.sync()
        self._load_quota(tenant)
        try:
            out = self.engine.decide(req, tenant, dry_run=dry_run, explain=explain, exclude=exclude)
            if isinstance(out, Refusal) and self.sync(min_interval_s=REFUSAL_SYNC_INTERVAL_S):
                out = self.engine.decide(req, tenant, dry_run=dry_run, explain=explain, exclude=exclude)
        finally:
            self._quota_ctx.limits = None
        if isinstance(out, Refusal):
            raise LeaseRefused(out)
        return out

    def dry_run(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        req = self.parse(body)
        decision = self._decide(req, tenant, dry_run=True, explain=True)
        out: dict[str, Any] = {"fits": True, "request": req.describe(), "claimed": False, **decision.summary()}
        f = decision.funnel
        if f is not None:
            out["candidates"] = {"hosts": f.hosts, "devices": f.devices, "fitting_hosts": f.fitting_hosts}
            out["filters"] = [
                {"filter": c.name, "removed_hosts": c.removed_hosts, "removed_devices": c.removed_devices}
                for c in f.filters
                if c.removed_hosts or c.removed_devices
            ]
        return out

    def find_idempotent(self, tenant: str, key: str | None, req_hash: str) -> Lease | None:
        if key is None:
            return None
        with self.db.session() as session:
            lease = session.scalar(select(Lease).where(Lease.tenant == tenant, Lease.idempotency_key == key))
        if lease is not None and lease.request_hash != req_hash:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was used for a different request (lease {lease.id}); use a new key",
                lease=lease.id,
            )
        return lease

    def create(
        self, body: dict[str, Any], tenant: str, principal: Principal | None, idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Place, claim and provision a lease; returns ``(lease id, created)`` (False: idempotent replay)."""
        req = self.parse(body)
        req_hash = request_hash(req)
        existing = self.find_idempotent(tenant, idempotency_key, req_hash)
        if existing is not None:
            if existing.state in TRANSITIONAL:
                self.recover_one(existing.id)  # a replay of a lease its creator left behind drives it on
            return existing.id, False
        lease_id = uuidlib.uuid4().hex
        try:
            self._place_and_claim(
                lease_id,
                req,
                tenant,
                frozenset(),
                lambda d: self._store_claim(lease_id, tenant, idempotency_key, req, req_hash, d, principal),
            )
        except LeaseRefused as exc:
            self.stats.refused += 1
            with self.db.session() as session:
                audit.record(
                    session, principal, "lease.create", tenant, "failed",
                    {"request": req.describe(), "error": exc.detail, "status": exc.status},
                )  # fmt: skip
            raise
        except _IdempotencyRace:
            again = self.find_idempotent(tenant, idempotency_key, req_hash)
            if again is None:  # pragma: no cover - the unique constraint said it exists
                raise PlacementContended("idempotency key race; retry") from None
            return again.id, False
        self.stats.created += 1
        crash_point("create.claimed")
        self._provision(lease_id)
        return lease_id, True

    def _place_and_claim(
        self,
        lease_id: str,
        req: PlacementRequest,
        tenant: str,
        exclude: frozenset[str],
        store: Callable[[Decision], None],
    ) -> Decision:
        """Decide, claim in this replica's index, then ``store`` the claim; a claim lost to a concurrent one
        (in the index: ``ClaimConflict``; in the store: ``_StoreConflict``) is decided again, up to
        ``MAX_ATTEMPTS`` times. ``LeaseRefused`` and whatever ``store`` raises otherwise propagate, with the
        index claim given back."""
        for _attempt in range(MAX_ATTEMPTS):
            decision = self._decide(req, tenant, exclude=exclude)
            try:
                claim = self.engine.claim(decision, lease_id)
            except ClaimConflict:
                self.stats.conflicts_retried += 1
                continue
            try:
                store(decision)
            except _StoreConflict:
                self.engine.release(claim)
                self.stats.conflicts_retried += 1
                self._refresh(self._ids_of(decision.host_ids))
                continue
            except BaseException:
                self.engine.release(claim)
                raise
            return decision
        raise PlacementContended(
            f"{req.describe()}: every one of {MAX_ATTEMPTS} attempts lost its claim to a concurrent request; retry",
            attempts=MAX_ATTEMPTS,
        )

    def _ids_of(self, hostnames: Iterable[str]) -> list[int]:
        return [self._ids[n] for n in hostnames if n in self._ids]

    def _claim_rows(
        self, session: Session, lease_id: str, tenant: str, allocs: list[Allocation]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i, a in enumerate(allocs):
            hid = self._ids.get(a.host_id)
            if hid is None:
                raise _StoreConflict(f"host {a.host_id} is gone")
            resource, slots = self._slots(session, a)
            rows += [
                {
                    "lease_id": lease_id,
                    "tenant": tenant,
                    "host_id": hid,
                    "device_uuid": a.device_uuid,
                    "resource": resource,
                    "slot": s,
                    "allocation": i,
                    "kind": a.kind,
                    "model": a.model,
                }
                for s in slots
            ]
        return rows

    def _slots(self, session: Session, a: Allocation) -> tuple[str, list[int]]:
        if a.kind == "gpu":
            return f"gpu:{a.device_uuid}", [0]
        if a.kind == "mig":
            assert a.placement is not None
            return f"mig:{a.device_uuid}", list(range(a.placement[0], a.placement[0] + a.placement[1]))
        host = self.engine.index.hosts.get(a.host_id)
        d = host.device(a.device_uuid) if host else None
        if d is None:
            raise _StoreConflict(f"device {a.device_uuid} is gone")
        if a.kind == "vgpu":
            resource = f"vgpu:{a.device_uuid}"
            offer = d.vgpu_types.get(a.vgpu_type or "")
            total = offer.max_instances if offer else 0
        else:
            resource = f"share:{a.device_uuid}"
            total = d.replicas
        used = set(
            session.scalars(
                select(SliceClaim.slot).where(SliceClaim.resource == resource, SliceClaim.released_at.is_(None))
            )
        )
        free = [s for s in range(total) if s not in used][: a.units]
        if len(free) < a.units:
            raise _StoreConflict(f"{resource}: {len(free)} free, {a.units} needed")
        return resource, free

    def _store_claim(
        self,
        lease_id: str,
        tenant: str,
        key: str | None,
        req: PlacementRequest,
        req_hash: str,
        decision: Decision,
        principal: Principal | None,
    ) -> None:
        allocs = decision.allocations
        hosts = decision.host_ids
        backend = decision.nodes[0].host.backend_kind if decision.nodes else "static"
        now = datetime.now(UTC)
        try:
            with self.db.session() as session:
                lease = Lease(
                    id=lease_id,
                    tenant=tenant,
                    idempotency_key=key,
                    request_hash=req_hash,
                    request=req.model_dump(mode="json"),
                    backend=backend,
                    allocations=[],
                    placement={},
                    created_by=principal.actor if principal else "system",
                    created_at=now,
                    expires_at=now + req.duration if req.duration else None,
                )
                transition(session, lease, "requested", at=now)
                session.add(lease)
                try:
                    session.flush()
                except IntegrityError:
                    raise _IdempotencyRace() from None
                transition(
                    session, lease, "placing", f"{len(allocs)} allocations on {', '.join(hosts)}", at=now,
                    owner=self.owner, deadline=self.timeouts.deadline("placing", now),
                )  # fmt: skip
                ids = self._insert_claims(session, lease, decision, at=now)
                audit.record(
                    session, principal, "lease.create", lease_id, "ok",
                    {"tenant": tenant, "request": req.describe(), "hosts": hosts},
                )  # fmt: skip
        except IntegrityError as exc:
            raise _StoreConflict(str(exc.orig)) from None
        self._bump_signatures(ids)

    def _insert_claims(self, session: Session, lease: Lease, decision: Decision, *, at: datetime) -> list[int]:
        """Claim ``decision`` for ``lease`` (state ``placing``) in this transaction, check the tenant's quotas
        against the store and move the lease to ``provisioning``; returns the host ids whose version moved."""
        allocs = decision.allocations
        rows = self._claim_rows(session, lease.id, lease.tenant, allocs)
        session.execute(insert(SliceClaim).values(claimed_at=self._now_expr(session)), rows)
        ids = sorted({r["host_id"] for r in rows})
        mark_hosts_changed(session, ids)
        self._enforce_quotas(session, lease.tenant)
        lease.allocations = [allocation_to_dict(a) for a in allocs]
        kept = {k: v for k, v in (lease.placement or {}).items() if k in ("tried_hosts", "failed_attempts")}
        lease.placement = {**decision.summary(), **kept}
        lease.backend = decision.nodes[0].host.backend_kind if decision.nodes else "static"
        transition(
            session, lease, "provisioning", f"claimed {len(rows)} units", at=at,
            owner=self.owner, deadline=self.timeouts.deadline("provisioning", at),
        )  # fmt: skip
        return ids

    def _enforce_quotas(self, session: Session, tenant: str) -> None:
        """The store's word on quotas, after this transaction's claims: the engine's check ran on usage read
        before the decision, which a concurrent claim by the same tenant (on any replica) may have changed.

        The tenant's quota rows are locked (``FOR UPDATE`` on PostgreSQL; SQLite serialises writers) so two
        claims by one tenant are counted one after the other; the loser's transaction is rolled back whole.
        """
        quotas = list(session.scalars(select(Quota).where(Quota.tenant == tenant).order_by(Quota.id).with_for_update()))
        if not quotas:
            return
        usage = usage_by_kind_model(session, tenant)
        for q in quotas:
            used = quota_used(q, usage)
            if used > q.limit:
                name = f"{q.kind}:{q.model}"
                raise QuotaExceeded(
                    f"the request would exceed quota {name} (limit {q.limit}, {used} with this request); "
                    "a concurrent lease of this tenant took the rest",
                    quota=name,
                    limit=q.limit,
                )

    def _bump_signatures(self, ids: Iterable[int]) -> None:
        """Our own write, just committed on this thread: the index already reflects it, so it must not count as
        a change to reload, unless another writer changed the host since the index loaded it."""
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

    # --- provisioning ----------------------------------------------------------------------------------------

    def reprovision(self, lease_id: str) -> None:
        """Ask the lease's backend again (idempotent): for a ``provisioning`` lease after something outside
        moved (an agent reported, a node registered, the controller restarted); any other state is left alone."""
        self._provision(lease_id)

    def _provision(self, lease_id: str) -> None:
        """Call the lease's backend with no store transaction open (a cloud deploy may take a while), then
        record the outcome if the lease is still ``provisioning`` (row-locked: a concurrent release wins or
        waits, never interleaves). One provisioning at a time per lease in this process.

        ``pending`` leaves the lease resting (no owner) until something outside moves (an agent report, a sync
        job) or its deadline passes. A backend error other than ``ProvisionFailed`` fails the lease through a
        backend release, so nothing the backend may have started is left behind."""
        with self._provision_locks[hash(lease_id) % len(self._provision_locks)], self._driving_marked(lease_id):
            call = backend_call(self.db, lease_id, "provisioning")
            if call is None:
                return
            backend = call.backend
            try:
                outcome = provisioner_for(backend, self.db).provision(call.info, call.allocations)
            except TryElsewhere as exc:
                relocate = exc
            except ProvisionFailed as exc:
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id, with_for_update=True)
                    if lease is not None and lease.state == "provisioning":
                        self._fail_and_release(session, lease, f"provisioning failed: {exc}")
                return
            except Exception as exc:
                log.exception("provisioning lease %s on %s raised", lease_id, backend)
                self._fail_through_release(lease_id, f"provisioning failed: {type(exc).__name__}: {exc}")
                return
            else:
                crash_point("create.provisioned")
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id, with_for_update=True)
                    if lease is None or lease.state != "provisioning":
                        return  # released meanwhile; the backend's release (or the reconciler) cleans up
                    if outcome.state == "ready":
                        lease.result = outcome.result
                        transition(session, lease, "ready", "provisioned")
                    else:
                        lease.reason = outcome.message
                        lease.owner = None  # resting: an agent, a sync job or the deadline moves it on
                        lease.updated_at = datetime.now(UTC)
                return
        self._relocate(lease_id, relocate)

    @contextmanager
    def _driving_marked(self, lease_id: str) -> Iterator[None]:
        with self._driving_lock:
            mine = lease_id not in self._driving
            self._driving.add(lease_id)
        try:
            yield
        finally:
            if mine:
                with self._driving_lock:
                    self._driving.discard(lease_id)

    def driving(self, lease_id: str) -> bool:
        with self._driving_lock:
            return lease_id in self._driving

    def _relocate(self, lease_id: str, why: TryElsewhere) -> None:
        """The backend could not use the hosts it was given: give the claims back and place the lease again,
        without those hosts (and the ones tried before); after ``MAX_CANDIDATES`` tries, or when nothing else
        fits, the lease fails with every reason on record."""
        with self.db.session() as session:
            lease = session.get(Lease, lease_id, with_for_update=True)
            if lease is None or lease.state != "provisioning":
                return
            given = sorted({a["host"] for a in lease.allocations})
            placement = dict(lease.placement or {})
            tried = sorted(set(placement.get("tried_hosts", [])) | set(why.hosts or given))
            attempts = [*placement.get("failed_attempts", []), {"hosts": given, "reason": str(why)}]
            placement.update(tried_hosts=tried, failed_attempts=attempts)
            lease.placement = placement
            req = parse_request(lease.request)
            tenant = lease.tenant
            ids = self._release_claims(session, lease_id)
            if len(attempts) >= MAX_CANDIDATES:
                transition(session, lease, "failed", f"provisioning failed on {len(attempts)} candidates; last: {why}")
                session.flush()
                session.commit()
                self._engine_release(lease_id)
                self._bump_signatures(ids)
                return
            transition(
                session, lease, "placing", f"{', '.join(given)}: {why}; trying another candidate",
                owner=self.owner, deadline=self.timeouts.deadline("placing"),
            )  # fmt: skip
        self._engine_release(lease_id)
        self._bump_signatures(ids)

        def store(decision: Decision) -> None:
            try:
                with self.db.session() as session:
                    lease = session.get(Lease, lease_id)
                    if lease is None or lease.state != "placing":
                        raise _LeaseMoved()
                    moved = self._insert_claims(session, lease, decision, at=datetime.now(UTC))
            except IntegrityError as exc:
                raise _StoreConflict(str(exc.orig)) from None
            self._bump_signatures(moved)

        try:
            self._place_and_claim(lease_id, req, tenant, frozenset(tried), store)
        except LeaseRefused as exc:
            self._fail_placing(lease_id, f"provisioning failed on {', '.join(given)} ({why}); {exc.detail}")
            return
        except (QuotaExceeded, PlacementContended) as exc:
            self._fail_placing(lease_id, exc.detail)
            return
        except _LeaseMoved:
            return  # released (or moved on) meanwhile by someone else
        self._provision(lease_id)

    def _fail_placing(self, lease_id: str, reason: str) -> None:
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            if lease is not None and lease.state == "placing":
                transition(session, lease, "failed", reason)

    def _fail_and_release(self, session: Session, lease: Lease, reason: str) -> None:
        transition(session, lease, "failed", reason)
        ids = self._release_claims(session, lease.id)
        session.flush()
        session.commit()
        self._engine_release(lease.id)
        self._bump_signatures(ids)

    def _release_claims(self, session: Session, lease_id: str) -> list[int]:
        ids = sorted(
            set(
                session.scalars(
                    select(SliceClaim.host_id).where(SliceClaim.lease_id == lease_id, SliceClaim.released_at.is_(None))
                )
            )
        )
        if ids:
            mark_hosts_changed(session, ids)
        session.execute(
            update(SliceClaim)
            .where(SliceClaim.lease_id == lease_id, SliceClaim.released_at.is_(None))
            .values(released_at=self._now_expr(session))
            .execution_options(synchronize_session=False)
        )
        return ids

    def _engine_release(self, lease_id: str) -> None:
        if lease_id in self.engine.claims:
            self.engine.release(lease_id)

    def _complete_pending(self, host_id: int) -> None:
        """Bind MIG instances the agent created for ``provisioning`` leases on this host, then provision them."""
        with self.db.session() as session:
            hostname = session.scalar(select(HostRow.hostname).where(HostRow.id == host_id))
            live = select(SliceClaim.lease_id).where(SliceClaim.host_id == host_id, SliceClaim.released_at.is_(None))
            pending = [
                lease.id
                for lease in session.scalars(
                    select(Lease).where(Lease.id.in_(live.distinct()), Lease.state == "provisioning")
                )
                if any(a.get("create") and not a.get("mig_uuid") and a["host"] == hostname for a in lease.allocations)
            ]
        changed = False
        for lease_id in pending:
            changed |= self._bind_instances(lease_id, host_id)
            self._provision(lease_id)
        if changed:
            self._refresh([host_id])

    def _bind_instances(self, lease_id: str, host_id: int) -> bool:
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            host = session.scalar(
                select(HostRow)
                .where(HostRow.id == host_id)
                .options(selectinload(HostRow.devices).selectinload(Device.mig_instances))
            )
            if lease is None or host is None or lease.state != "provisioning":
                return False
            taken = _claimed_mig_uuids(session, host_id, exclude=lease_id)
            allocs = [dict(a) for a in lease.allocations]
            bound = False
            for i, a in enumerate(allocs):
                if not (a.get("create") and not a.get("mig_uuid") and a["host"] == host.hostname):
                    continue
                device = next((d for d in host.devices if d.uuid == a["device"]), None)
                if device is None:
                    continue
                want = (a["placement"]["start"], a["placement"]["size"])
                candidates = [
                    m for m in device.mig_instances if m.profile == a["profile"] and m.uuid and m.uuid not in taken
                ]
                # The agent plans placements itself; usually where the engine chose, else any new instance.
                candidates.sort(key=lambda m: (m.placement_start, m.placement_size) != want)
                if not candidates:
                    continue
                m = candidates[0]
                taken.add(m.uuid or "")
                a["mig_uuid"] = m.uuid
                if (m.placement_start, m.placement_size) != want:
                    a["placement"] = {"start": m.placement_start, "size": m.placement_size}
                    session.execute(
                        update(SliceClaim)
                        .where(
                            SliceClaim.lease_id == lease_id,
                            SliceClaim.allocation == i,
                            SliceClaim.released_at.is_(None),
                        )
                        .values(released_at=self._now_expr(session))
                        .execution_options(synchronize_session=False)
                    )
                    session.execute(
                        insert(SliceClaim).values(claimed_at=self._now_expr(session)),
                        [
                            {
                                "lease_id": lease_id, "tenant": lease.tenant, "host_id": host_id,
                                "device_uuid": a["device"], "resource": f"mig:{a['device']}", "slot": s,
                                "allocation": i, "kind": "mig", "model": a["model"],
                            }
                            for s in range(m.placement_start, m.placement_start + m.placement_size)
                        ],
                    )  # fmt: skip
                bound = True
            if bound:
                lease.allocations = allocs
                mark_hosts_changed(session, [host_id])
            return bound


def _signature(row: HostRow) -> tuple[Any, ...]:
    return (row.placement_version, row.inventory_hash, row.status, row.admin_state, row.pool_id)


def _claimed_mig_uuids(session: Session, host_id: int, *, exclude: str) -> set[str]:
    live = select(SliceClaim.lease_id).where(SliceClaim.host_id == host_id, SliceClaim.released_at.is_(None))
    out: set[str] = set()
    for lease in session.scalars(select(Lease).where(Lease.id.in_(live.distinct()), Lease.id != exclude)):
        out |= {a["mig_uuid"] for a in lease.allocations if a.get("mig_uuid")}
    return out


def usage_by_kind_model(session: Session, tenant: str) -> dict[tuple[str, str], int]:
    """Live units per (kind, model) for a tenant; MIG counts instances, not memory slices."""
    rows = session.execute(
        select(SliceClaim.kind, SliceClaim.model, SliceClaim.lease_id, SliceClaim.allocation, func.count())
        .where(SliceClaim.tenant == tenant, SliceClaim.released_at.is_(None))
        .group_by(SliceClaim.kind, SliceClaim.model, SliceClaim.lease_id, SliceClaim.allocation)
    ).all()
    out: dict[tuple[str, str], int] = {}
    for kind, model, _lid, _alloc, n in rows:
        out[(kind, model)] = out.get((kind, model), 0) + (1 if kind == "mig" else int(n))
    return out


def quota_used(q: Quota, usage: dict[tuple[str, str], int]) -> int:
    """A quota's usage: its kind and model, or every model of its kind for ``*``."""
    if q.model == "*":
        return sum(n for (k, _m), n in usage.items() if k == q.kind)
    return usage.get((q.kind, q.model), 0)


def expiry_after(duration_s: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=duration_s)
