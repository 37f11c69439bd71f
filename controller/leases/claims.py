"""Placing a lease and storing its claims: decide on this replica's engine, claim in the engine, then in the store.

Every replica has its own engine; the store arbitrates. A claim is one transaction that inserts the lease,
its transitions and one ``slice_claims`` row per claimed unit; the partial unique index on live
``(resource, slot)`` rows refuses a unit claimed twice, whichever replica claimed it first. The loser rolls
back, reloads the hosts involved from the store and decides again (``MAX_ATTEMPTS`` times, then 409). The same
transaction checks the tenant's quotas against the store (:func:`controller.leases.quotas.enforce_quotas`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from controller import audit
from controller.auth.tokens import Principal
from controller.leases.errors import IdempotencyKeyReused, InvalidLeaseRequest, LeaseRefused, PlacementContended
from controller.leases.fleet import allocation_to_dict
from controller.leases.index import PlacementIndex
from controller.leases.metrics import Stats
from controller.leases.ownership import Ownership
from controller.leases.quotas import TenantQuotas, enforce_quotas
from controller.leases.state import transition
from controller.placement import Allocation, ClaimConflict, Decision, PlacementRequest, Refusal, parse_request
from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.errors import is_transient
from controller.store.models import Lease, SliceClaim

MAX_ATTEMPTS = 8
REFUSAL_SYNC_INTERVAL_S = 0.2


class StoreConflict(Exception):
    """The store refused the claim (a unit claimed meanwhile, a host gone): decide again."""


class IdempotencyRace(Exception):
    """A concurrent request with the same Idempotency-Key stored its lease first."""


def request_hash(req: PlacementRequest) -> str:
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_lease_request(body: dict[str, Any]) -> PlacementRequest:
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


def statement_now(session: Session) -> ColumnElement[datetime] | datetime:
    # clock_timestamp() is the time the statement runs, not the transaction start: claim/release
    # intervals of one unit then never overlap in the history the invariant checker reads.
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp()  # type: ignore[return-value]
    return datetime.now(UTC)


def memory_slices(a: Allocation) -> tuple[str, list[int]] | None:
    """The store units of an allocation that holds GPU memory slices: a MIG slice, or a MIG-backed vGPU on its GPU
    instance. Both claim ``mig:<device>`` with one slot per memory slice, so the partial unique index refuses a
    MIG lease and a vGPU lease (or two of either) holding one slice, whichever replica claimed it first."""
    if a.placement is None or a.kind not in ("mig", "vgpu"):
        return None
    return f"mig:{a.device_uuid}", list(range(a.placement[0], a.placement[0] + a.placement[1]))


class Claims:
    def __init__(
        self, db: Database, index: PlacementIndex, quotas: TenantQuotas, ownership: Ownership, stats: Stats
    ) -> None:
        self.db = db
        self.index = index
        self.engine = index.engine
        self.quotas = quotas
        self.ownership = ownership
        self.stats = stats

    # --- deciding ------------------------------------------------------------------------------------------

    def decide(
        self,
        req: PlacementRequest,
        tenant: str,
        *,
        dry_run: bool = False,
        explain: bool = False,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        self.index.sync()
        self.quotas.load(tenant)
        try:
            out = self.engine.decide(req, tenant, dry_run=dry_run, explain=explain, exclude=exclude)
            if isinstance(out, Refusal) and self.index.sync(min_interval_s=REFUSAL_SYNC_INTERVAL_S):
                out = self.engine.decide(req, tenant, dry_run=dry_run, explain=explain, exclude=exclude)
        finally:
            self.quotas.unload()
        if isinstance(out, Refusal):
            raise LeaseRefused(out)
        return out

    def dry_run(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        req = parse_lease_request(body)
        decision = self.decide(req, tenant, dry_run=True, explain=True)
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

    # --- claiming ------------------------------------------------------------------------------------------

    def claim_new(
        self,
        lease_id: str,
        req: PlacementRequest,
        req_hash: str,
        tenant: str,
        principal: Principal | None,
        idempotency_key: str | None,
    ) -> None:
        """Place a new lease and store it with its claims (``provisioning``); a refusal is audited and raised,
        a concurrent request with the same Idempotency-Key raises :class:`IdempotencyRace`."""
        try:
            self.place_and_claim(
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
        self.stats.created += 1

    def place_and_claim(
        self,
        lease_id: str,
        req: PlacementRequest,
        tenant: str,
        exclude: frozenset[str],
        store: Callable[[Decision], None],
    ) -> Decision:
        """Decide, claim in this replica's index, then ``store`` the claim; a claim lost to a concurrent one
        (in the index: ``ClaimConflict``; in the store: ``StoreConflict``) is decided again, up to
        ``MAX_ATTEMPTS`` times. ``LeaseRefused`` and whatever ``store`` raises otherwise propagate, with the
        index claim given back."""
        for _attempt in range(MAX_ATTEMPTS):
            decision = self.decide(req, tenant, exclude=exclude)
            try:
                claim = self.engine.claim(decision, lease_id)
            except ClaimConflict:
                self.stats.conflicts_retried += 1
                continue
            try:
                store(decision)
            except StoreConflict:
                self.engine.release(claim)
                self.stats.conflicts_retried += 1
                self.index.refresh(self.index.ids_of(decision.host_ids))
                continue
            except BaseException:
                self.engine.release(claim)
                raise
            return decision
        raise PlacementContended(
            f"{req.describe()}: every one of {MAX_ATTEMPTS} attempts lost its claim to a concurrent request; retry",
            attempts=MAX_ATTEMPTS,
        )

    def _claim_rows(
        self, session: Session, lease_id: str, tenant: str, allocs: list[Allocation]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i, a in enumerate(allocs):
            hid = self.index.host_id(a.host_id)
            if hid is None:
                raise StoreConflict(f"host {a.host_id} is gone")
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
        held = memory_slices(a)
        if held is not None:
            return held
        host = self.engine.index.hosts.get(a.host_id)
        d = host.device(a.device_uuid) if host else None
        if d is None:
            raise StoreConflict(f"device {a.device_uuid} is gone")
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
            raise StoreConflict(f"{resource}: {len(free)} free, {a.units} needed")
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
                    raise IdempotencyRace() from None
                transition(
                    session, lease, "placing", f"{len(allocs)} allocations on {', '.join(hosts)}", at=now,
                    owner=self.ownership.owner, deadline=self.ownership.timeouts.deadline("placing", now),
                )  # fmt: skip
                ids = self.insert_claims(session, lease, decision, at=now)
                audit.record(
                    session, principal, "lease.create", lease_id, "ok",
                    {"tenant": tenant, "request": req.describe(), "hosts": hosts},
                )  # fmt: skip
        except IntegrityError as exc:
            raise StoreConflict(str(exc.orig)) from None
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            raise StoreConflict(f"the database asked to retry: {exc.orig}") from None
        self.index.adopt_own_commit(ids)

    def insert_claims(self, session: Session, lease: Lease, decision: Decision, *, at: datetime) -> list[int]:
        """Claim ``decision`` for ``lease`` (state ``placing``) in this transaction, check the tenant's quotas
        against the store and move the lease to ``provisioning``; returns the ids of the hosts it changed."""
        allocs = decision.allocations
        rows = self._claim_rows(session, lease.id, lease.tenant, allocs)
        session.execute(insert(SliceClaim).values(claimed_at=statement_now(session)), rows)
        ids = sorted({r["host_id"] for r in rows})
        mark_hosts_changed(session, ids)
        enforce_quotas(session, lease.tenant)
        lease.allocations = [allocation_to_dict(a) for a in allocs]
        kept = {k: v for k, v in (lease.placement or {}).items() if k in ("tried_hosts", "failed_attempts")}
        lease.placement = {**decision.summary(), **kept}
        lease.backend = decision.nodes[0].host.backend_kind if decision.nodes else "static"
        transition(
            session, lease, "provisioning", f"claimed {len(rows)} units", at=at,
            owner=self.ownership.owner, deadline=self.ownership.timeouts.deadline("provisioning", at),
        )  # fmt: skip
        return ids

    # --- giving claims back --------------------------------------------------------------------------------

    def release_claims(self, session: Session, lease_id: str) -> list[int]:
        """Free the lease's live claims in this transaction; returns the ids of the hosts they were on."""
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
            .values(released_at=statement_now(session))
            .execution_options(synchronize_session=False)
        )
        return ids

    def released(self, lease_id: str, host_ids: list[int]) -> None:
        """After the commit that freed the lease's claims: give its engine claim back, adopt our own commit."""
        if lease_id in self.engine.claims:
            self.engine.release(lease_id)
        self.index.adopt_own_commit(host_ids)
