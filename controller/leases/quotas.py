"""Tenant quotas: the limits the engine decides with, and the store's word on them when a claim commits."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.leases.errors import QuotaExceeded
from controller.store.db import Database
from controller.store.models import Quota, SliceClaim

QUOTA_ROWS_TTL_S = 1.0


class TenantQuotas:
    """The engine's quota callback (``check``), fed per decision on the deciding thread (``load``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ctx = threading.local()
        self._rows: dict[str, tuple[float, list[Quota]]] = {}

    def check(self, tenant: str, kind: str, model: str, units: int) -> str | None:
        ctx: dict[tuple[str, str], tuple[int, int]] | None = getattr(self._ctx, "limits", None)
        if not ctx:
            return None
        for key in ((kind, model), (kind, "*")):
            entry = ctx.get(key)
            if entry is not None and entry[1] + units > entry[0]:
                return f"{kind}:{key[1]} (limit {entry[0]}, in use {entry[1]}, asked {units})"
        return None

    def changed(self, tenant: str) -> None:
        """This replica changed the tenant's limits: decide with them at once."""
        self._rows.pop(tenant, None)

    def load(self, tenant: str) -> None:
        # The tenant's limit rows are kept QUOTA_ROWS_TTL_S (most tenants have none: no usage query then); usage
        # is read for every decision. The claim transaction checks both against the store again, so a limit
        # changed on another replica a moment ago is never overrun, only explained a moment later.
        cached = self._rows.get(tenant)
        if cached is None or cached[0] < time.monotonic():
            with self.db.session() as session:
                rows = list(session.scalars(select(Quota).where(Quota.tenant == tenant)))
            cached = (time.monotonic() + QUOTA_ROWS_TTL_S, rows)
            self._rows[tenant] = cached
        quotas = cached[1]
        limits: dict[tuple[str, str], tuple[int, int]] = {}
        if quotas:
            with self.db.session() as session:
                usage = usage_by_kind_model(session, tenant)
            for q in quotas:
                limits[(q.kind, q.model)] = (q.limit, quota_used(q, usage))
        self._ctx.limits = limits

    def unload(self) -> None:
        self._ctx.limits = None


def enforce_quotas(session: Session, tenant: str) -> None:
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
