"""Admin: per-tenant quotas on live slices, by kind and optionally GPU model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from controller import audit
from controller.api.deps import Require, get_db
from controller.auth.tokens import Principal, Role
from controller.bounds import NO_NUL, Count32, Name128
from controller.leases.fleet import short_model
from controller.leases.quotas import usage_by_kind_model
from controller.store.db import Database
from controller.store.models import Quota

router = APIRouter(prefix="/v1/quotas", tags=["quotas"])
ADMIN = Require(Role.admin)
TENANT_PATH = Path(min_length=1, max_length=128, pattern=NO_NUL, description="The tenant (at most 128 characters)")


class QuotaLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["gpu", "mig", "timeslice", "mps", "vgpu"]
    model: Name128 = Field("*", description='GPU model short name ("H100-80GB") or "*" for every model')
    limit: Count32 = Field(description="Live units: GPUs, MIG instances, shared replicas or vGPU instances")


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: list[QuotaLimit] = Field(max_length=100)


class QuotaUsage(BaseModel):
    kind: str
    model: str
    limit: int
    in_use: int


class QuotaOut(BaseModel):
    tenant: str
    limits: list[QuotaUsage]
    usage: dict[str, int] = Field(description='Live units by "kind:model"')


def quota_of(db: Database, tenant: str) -> QuotaOut:
    """The tenant's limits with what it uses of each, and its live usage by kind and model."""
    with db.session() as session:
        usage = usage_by_kind_model(session, tenant)
        limits = []
        for q in session.scalars(select(Quota).where(Quota.tenant == tenant).order_by(Quota.kind, Quota.model)):
            used = sum(n for (k, m), n in usage.items() if k == q.kind and q.model in ("*", m))
            limits.append(QuotaUsage(kind=q.kind, model=q.model, limit=q.limit, in_use=used))
    return QuotaOut(tenant=tenant, limits=limits, usage={f"{k}:{m}": n for (k, m), n in sorted(usage.items())})


@router.get("", response_model=list[QuotaOut])
def list_quotas(_: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[QuotaOut]:
    with db.session() as session:
        tenants = sorted(set(session.scalars(select(Quota.tenant))))
    return [quota_of(db, t) for t in tenants]


@router.get("/{tenant}", response_model=QuotaOut)
def get_quota(tenant: str = TENANT_PATH, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> QuotaOut:
    return quota_of(db, tenant)


@router.put("/{tenant}", response_model=QuotaOut)
def set_quota(
    body: QuotaIn,
    request: Request,
    tenant: str = TENANT_PATH,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> QuotaOut:
    """Replace the tenant's limits (an empty list removes them). Existing leases are never revoked."""
    # One limit per (kind, model); a repeated pair keeps the last value given.
    by_key = {(q.kind, q.model if q.model == "*" else short_model(q.model)): q.limit for q in body.limits}
    limits = [{"kind": k, "model": m, "limit": n} for (k, m), n in by_key.items()]
    with audit.mutation(db, principal, "quota.set", tenant, {"limits": limits}) as (session, _):
        session.execute(delete(Quota).where(Quota.tenant == tenant))
        session.flush()
        now = datetime.now(UTC)
        for q in limits:
            session.add(Quota(tenant=tenant, kind=q["kind"], model=q["model"], limit=q["limit"], updated_at=now))
    request.app.state.leases.quotas_changed(tenant)
    return quota_of(db, tenant)
