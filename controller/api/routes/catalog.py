"""Tenants: what they may ask for now (``GET /v1/offers``) and their own quota (``GET /v1/quotas/me``).

The catalog counts free units per backend, region, kind, model and MIG profile or vGPU type from this replica's
placement index (caught up with the store first), with the tenant's quota room applied; it never names hosts or
GPUs. Devices, hosts and pools stay admin-only.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from controller.api.deps import Require, get_db
from controller.api.problems import Problem
from controller.api.routes.quotas import QuotaOut, QuotaUsage, quota_of
from controller.auth.tokens import Principal, Role
from controller.bounds import NO_NUL
from controller.leases.service import LeaseService
from controller.store.db import Database

router = APIRouter(tags=["catalog"])
TENANT_OR_ADMIN = Require(Role.tenant, Role.admin)
KINDS = ("gpu", "mig", "timeslice", "mps", "vgpu")


class Offer(BaseModel):
    kind: str = Field(description="gpu | mig | timeslice | mps | vgpu")
    model: str = Field(description='GPU model short name ("H100-80GB"), as a lease request takes it')
    profile: str | None = Field(None, description="MIG profile (kind mig)")
    vgpu_type: str | None = Field(None, description="vGPU type (kind vgpu)")
    on_demand: bool = Field(
        False, description="MIG instances an agent would create for the lease (not existing yet; ready after it did)"
    )
    whole_node: bool = Field(False, description="The backend leases hosts whole (Ironic): a lease takes every GPU")
    backend: str
    backend_kind: str
    region: str
    free: int = Field(description="Units free now: GPUs, MIG instances, shared replicas or vGPU instances")
    hosts: int = Field(description="How many hosts have at least one free unit (a count; hosts are not named)")
    max_per_host: int = Field(description="The most units one host offers now (the largest same-host request)")
    quota_left: int | None = Field(None, description="Units the tenant's quotas still allow (null: no quota)")
    requestable: int = Field(description="min(free, quota_left): what this tenant may ask for now")


class OffersOut(BaseModel):
    tenant: str
    offers: list[Offer]
    quotas: list[QuotaUsage] = Field(description="The tenant's limits with what it uses")


def _service(request: Request) -> LeaseService:
    svc: LeaseService = request.app.state.leases
    return svc


def _tenant(principal: Principal, tenant: str | None) -> str:
    if principal.role is Role.tenant:
        assert principal.tenant is not None
        if tenant is not None and tenant != principal.tenant:
            raise Problem(403, "forbidden", f"a tenant token of {principal.tenant} cannot read {tenant}'s offers")
        return principal.tenant
    if not tenant:
        raise Problem(422, "validation-error", "an admin must name the tenant (?tenant=...)")
    return tenant


def _quota_left(quotas: list[QuotaUsage], kind: str, model: str) -> int | None:
    room = [max(q.limit - q.in_use, 0) for q in quotas if q.kind == kind and q.model in ("*", model)]
    return min(room) if room else None


def _offers(db: Database, svc: LeaseService, tenant: str, kind: str | None, model: str | None) -> OffersOut:
    quota = quota_of(db, tenant)
    offers: list[Offer] = []
    for group, count in sorted(svc.offers().items()):
        if (kind and group.kind != kind) or (model and model.lower() not in group.model.lower()):
            continue
        left = _quota_left(quota.limits, group.kind, group.model)
        offers.append(
            Offer(
                kind=group.kind,
                model=group.model,
                profile=group.profile,
                vgpu_type=group.vgpu_type,
                on_demand=group.on_demand,
                whole_node=group.whole_node,
                backend=group.backend,
                backend_kind=group.backend_kind,
                region=group.region,
                free=count.free,
                hosts=count.hosts,
                max_per_host=count.max_per_host,
                quota_left=left,
                requestable=count.free if left is None else min(count.free, left),
            )
        )
    return OffersOut(tenant=tenant, offers=offers, quotas=quota.limits)


@router.get("/v1/offers", response_model=OffersOut)
async def offers(
    kind: str | None = Query(None, pattern="^(gpu|mig|timeslice|mps|vgpu)$", description=" | ".join(KINDS)),
    model: str | None = Query(None, min_length=1, max_length=128, pattern=NO_NUL, description="Model name contains"),
    tenant: str | None = Query(
        None, min_length=1, max_length=128, pattern=NO_NUL, description="Admins only: as this tenant (its quotas)"
    ),
    principal: Principal = Depends(TENANT_OR_ADMIN),
    db: Database = Depends(get_db),
    svc: LeaseService = Depends(_service),
) -> OffersOut:
    """What the caller's tenant may request now: free units per backend, region, kind, model and MIG profile or
    vGPU type, with its quota room. Counts only: no host names."""
    who = _tenant(principal, tenant)
    return await run_in_threadpool(_offers, db, svc, who, kind, model)


@router.get("/v1/quotas/me", response_model=QuotaOut)
def my_quota(principal: Principal = Depends(TENANT_OR_ADMIN), db: Database = Depends(get_db)) -> QuotaOut:
    """A tenant's own limits, what it uses of each, and its live usage by kind and model. For an admin this path
    is the quota of the tenant named ``me`` (``/v1/quotas/{tenant}``)."""
    return quota_of(db, principal.tenant if principal.role is Role.tenant and principal.tenant else "me")
