"""Tenants: leases (placed GPU slices) and dry-run placement. Admins see and release every tenant's leases.

Creating is asynchronous where the backend is: 201 for a lease ready at once, 202 Accepted with ``Location`` while
it is not (``GET /v1/leases/{id}?wait=N`` long-polls it), 409 ``lease-failed`` (with the lease's id and reason) when
it failed before the answer. Refusals and dry runs show tenants counts and reasons, not other hosts' names
(:mod:`controller.api.redaction`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from controller.api.deps import Require, get_db, get_settings
from controller.api.lease_wait import MAX_WAIT_S, wait_for_change
from controller.api.problems import Problem
from controller.api.redaction import lease_for, plan_for, refusal_for
from controller.auth.tokens import Principal, Role
from controller.bounds import MAX_OFFSET, NO_NUL
from controller.leases.access import AccessVault
from controller.leases.errors import LeaseError
from controller.leases.service import LeaseService
from controller.leases.state import STATES
from controller.placement import PlacementRequest
from controller.settings import Settings
from controller.store.db import Database
from controller.store.models import Lease, LeaseTransition

router = APIRouter(tags=["leases"])
TENANT_OR_ADMIN = Require(Role.tenant, Role.admin)

REQUEST_EXAMPLE = {"slices": [{"kind": "gpu", "count": 2, "model": "H100"}], "topology": "same-host"}
TENANT_QUERY = Query(
    None, min_length=1, max_length=128, pattern=NO_NUL, description="Admins only: the tenant the lease is for"
)
LEASE_ID = Path(max_length=64, pattern=NO_NUL)
# States a lease leaves without anyone asking: POST answers 202 in them, GET ?wait=N waits on them.
WAITABLE = frozenset({"requested", "placing", "provisioning", "releasing"})


class TransitionOut(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class LeaseOut(BaseModel):
    id: str
    tenant: str
    state: str
    reason: str
    backend: str
    request: dict[str, Any]
    allocations: list[dict[str, Any]]
    placement: dict[str, Any]
    result: dict[str, Any] | None
    access: dict[str, Any] | None = Field(
        None,
        description="What the tenant needs to reach its resources while the lease is ready (credentials, addresses; "
        "per backend kind, docs/api.md). Shown only to the lease's tenant and to admins, by GET /v1/leases/{id} and "
        "the create answer (not in lists); null once the lease is released, expired or failed",
    )
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str
    idempotency_key: str | None
    failure_reason: str | None = Field(
        None, description="Why the lease failed (state `failed`); null in every other state"
    )
    transitions: list[TransitionOut] = []


def service(request: Request) -> LeaseService:
    svc: LeaseService = request.app.state.leases
    return svc


def as_problem(exc: LeaseError, principal: Principal) -> Problem:
    return Problem(exc.status, exc.slug, exc.detail, **refusal_for(principal, exc))


def lease_failed(out: LeaseOut) -> Problem:
    """A lease that failed before the answer: not a success. 409 (like a refusal), naming the stored lease (as
    the caller may see it)."""
    problem = Problem(
        409,
        "lease-failed",
        f"lease {out.id} failed: {out.failure_reason}",
        lease_id=out.id,
        state=out.state,
        failure_reason=out.failure_reason,
        lease=out.model_dump(mode="json"),
    )
    problem.headers["Location"] = f"/v1/leases/{out.id}"
    return problem


def bounded_request(req: PlacementRequest, settings: Settings) -> dict[str, Any]:
    """The request as the lease service takes it, once its duration is within ``max_lease_duration_s``."""
    longest = timedelta(seconds=settings.max_lease_duration_s)
    if req.duration is not None and req.duration > longest:
        msg = f"must be at most {settings.max_lease_duration_s} s ({longest}; the controller's max_lease_duration_s)"
        raise Problem(
            422,
            "validation-error",
            f"body.duration: {msg}",
            errors=[{"loc": ["body", "duration"], "msg": msg, "type": "less_than_equal"}],
        )
    return req.model_dump(mode="json", exclude_unset=True)


def tenant_of(principal: Principal, tenant: str | None) -> str:
    if principal.role is Role.tenant:
        assert principal.tenant is not None
        if tenant is not None and tenant != principal.tenant:
            raise Problem(403, "forbidden", f"a tenant token of {principal.tenant} cannot act for {tenant}")
        return principal.tenant
    if not tenant:
        raise Problem(422, "validation-error", "an admin must name the tenant (?tenant=...)")
    return tenant


def lease_out(db: Database, lease_id: str, vault: AccessVault | None = None) -> LeaseOut:
    """The stored lease with its transitions; with ``vault``, its access opened (callers check who asks)."""
    with db.session() as session:
        lease = session.get(Lease, lease_id)
        if lease is None:
            raise Problem(404, "not-found", f"lease {lease_id} not found")
        rows = session.scalars(
            select(LeaseTransition).where(LeaseTransition.lease_id == lease_id).order_by(LeaseTransition.id)
        )
        return _out(lease, rows, vault)


def _out(lease: Lease, transitions: Iterable[LeaseTransition] = (), vault: AccessVault | None = None) -> LeaseOut:
    return LeaseOut(
        id=lease.id,
        tenant=lease.tenant,
        state=lease.state,
        reason=lease.reason,
        backend=lease.backend,
        request=lease.request,
        allocations=lease.allocations,
        placement=lease.placement,
        result=lease.result,
        access=vault.open(lease.access_sealed, lease.id) if vault is not None and lease.state == "ready" else None,
        expires_at=lease.expires_at,
        created_at=lease.created_at,
        updated_at=lease.updated_at,
        created_by=lease.created_by,
        idempotency_key=lease.idempotency_key,
        failure_reason=lease.reason if lease.state == "failed" else None,
        transitions=[
            TransitionOut(from_state=t.from_state, to_state=t.to_state, reason=t.reason, at=t.at) for t in transitions
        ],
    )


def _own_lease(db: Database, principal: Principal, lease_id: str, vault: AccessVault | None = None) -> LeaseOut:
    """The lease if ``principal`` may see it: another tenant's is 404, with no hint that it exists. Its access
    (opened with ``vault``) only ever reaches its own tenant or an admin."""
    out = lease_out(db, lease_id, vault)
    if principal.role is Role.tenant and out.tenant != principal.tenant:
        raise Problem(404, "not-found", f"lease {lease_id} not found")  # no hint that it exists (nor its access)
    if principal.role is not Role.admin and out.tenant != principal.tenant:
        out.access = None
    return out


def visible_lease(db: Database, principal: Principal, lease_id: str, vault: AccessVault | None = None) -> LeaseOut:
    """The lease as ``principal`` may see it: another tenant's is 404, with no hint that it exists; a tenant's
    own without the hosts tried before (``controller.api.redaction.lease_for``); its access only with ``vault``."""
    return lease_for(principal, _own_lease(db, principal, lease_id, vault))


@router.post(
    "/v1/leases",
    response_model=LeaseOut,
    status_code=201,
    responses={
        200: {"model": LeaseOut, "description": "The same Idempotency-Key and body again: the same lease"},
        202: {
            "model": LeaseOut,
            "description": "Accepted, not ready yet (provisioning): follow `Location` (`GET ...?wait=N` long-polls)",
        },
    },
)
def create_lease(
    response: Response,
    body: PlacementRequest = Body(..., examples=[REQUEST_EXAMPLE]),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1, max_length=256, pattern=NO_NUL),
    tenant: str | None = TENANT_QUERY,
    principal: Principal = Depends(TENANT_OR_ADMIN),
    svc: LeaseService = Depends(service),
    settings: Settings = Depends(get_settings),
) -> LeaseOut:
    """Place, claim and provision a request (see docs/placement.md for the request language).

    201 with the lease when it is ``ready``; 202 with ``Location`` while it is not (``provisioning``: an agent
    creates a MIG instance, a cloud deploys a machine); 409 ``lease-failed`` with ``lease_id`` and
    ``failure_reason`` when provisioning failed before the answer. The same ``Idempotency-Key`` with the same
    body answers the same lease again (200 when ready or released, 202 or 409 as above), with another body 422.
    Nothing fits: 409 ``no-capacity`` with per-filter counts; over quota: 403 ``quota-exceeded`` naming it."""
    who = tenant_of(principal, tenant)
    try:
        made = svc.create(bounded_request(body, settings), who, principal, idempotency_key)
    except LeaseError as exc:
        raise as_problem(exc, principal) from None
    mine = principal.role is Role.admin or principal.tenant == made.lease.tenant
    out = lease_for(principal, _out(made.lease, made.transitions, svc.access if mine else None))
    if out.state == "failed":
        raise lease_failed(out)
    if out.state in WAITABLE:
        response.status_code = 202
        response.headers["Retry-After"] = "1"
    elif not made.created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/leases/{out.id}"
    return out


@router.get("/v1/leases", response_model=list[LeaseOut])
def list_leases(
    tenant: str | None = Query(None, max_length=128, pattern=NO_NUL, description="Admins: only this tenant's leases"),
    state: str | None = Query(None, max_length=16, description=" | ".join(STATES)),
    limit: int = Query(200, ge=1, le=5000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    principal: Principal = Depends(TENANT_OR_ADMIN),
    db: Database = Depends(get_db),
) -> list[LeaseOut]:
    """A tenant sees its own leases only; an admin sees every tenant's."""
    stmt = select(Lease)
    if principal.role is Role.tenant:
        stmt = stmt.where(Lease.tenant == principal.tenant)
    elif tenant:
        stmt = stmt.where(Lease.tenant == tenant)
    if state:
        if state not in STATES:
            raise Problem(422, "validation-error", f"state must be one of {', '.join(STATES)}")
        stmt = stmt.where(Lease.state == state)
    stmt = stmt.order_by(Lease.created_at.desc(), Lease.id).limit(limit).offset(offset)
    with db.session() as session:
        return [lease_for(principal, _out(lease)) for lease in session.scalars(stmt)]


@router.get("/v1/leases/{lease_id}", response_model=LeaseOut)
async def show_lease(
    lease_id: str = LEASE_ID,
    wait: float = Query(
        0,
        ge=0,
        le=MAX_WAIT_S,
        description=f"Long-poll: while the lease is {', '.join(sorted(WAITABLE))}, answer when its state or reason "
        f"changes or after this many seconds (at most {MAX_WAIT_S:g})",
    ),
    principal: Principal = Depends(TENANT_OR_ADMIN),
    db: Database = Depends(get_db),
    svc: LeaseService = Depends(service),
) -> LeaseOut:
    """State, every transition (with time and reason), allocations, the backend's result when ready, and the
    ``access`` it hands out (credentials; to the lease's tenant and admins only, while the lease is ready)."""
    out = await run_in_threadpool(_own_lease, db, principal, lease_id, svc.access)
    if wait > 0 and out.state in WAITABLE and await wait_for_change(db, lease_id, out.state, out.reason, wait):
        out = await run_in_threadpool(_own_lease, db, principal, lease_id, svc.access)
    return lease_for(principal, out)


@router.delete("/v1/leases/{lease_id}", response_model=LeaseOut)
def release_lease(
    lease_id: str = LEASE_ID,
    principal: Principal = Depends(TENANT_OR_ADMIN),
    db: Database = Depends(get_db),
    svc: LeaseService = Depends(service),
) -> LeaseOut:
    """Release: ``releasing`` then ``released``; the capacity returns. Releasing a released lease is a no-op."""
    visible_lease(db, principal, lease_id)
    try:
        svc.release(lease_id, principal)
    except LeaseError as exc:
        raise as_problem(exc, principal) from None
    return lease_for(principal, lease_out(db, lease_id))


@router.post("/v1/placements:dry-run")
def dry_run(
    body: PlacementRequest = Body(..., examples=[REQUEST_EXAMPLE]),
    tenant: str | None = Query(
        None, min_length=1, max_length=128, pattern=NO_NUL, description="Admins only: decide as this tenant (quotas)"
    ),
    principal: Principal = Depends(TENANT_OR_ADMIN),
    svc: LeaseService = Depends(service),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """Where the request would go, with scores and the filter funnel; claims nothing."""
    who = tenant_of(principal, tenant) if principal.role is Role.tenant or tenant else "admin"
    try:
        return plan_for(principal, svc.dry_run(bounded_request(body, settings), who))
    except LeaseError as exc:
        raise as_problem(exc, principal) from None
