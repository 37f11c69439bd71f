"""Tenants (and admins): leases with their state timeline and what to use, the request form with a dry-run
preview, and a refusal's filter funnel. Every call goes through the REST API's lease routes, so a tenant
sees and touches exactly what its token may."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from controller.api.deps import get_db, get_settings
from controller.api.problems import Problem
from controller.api.routes import leases as leases_api
from controller.auth.tokens import Role
from controller.leases.service import LeaseService
from controller.settings import Settings
from controller.store.db import Database
from controller.ui import drawing
from controller.ui.errors import UiError, through_api
from controller.ui.forms import checked_form
from controller.ui.lease_form import KINDS, POLICIES, TOPOLOGIES, LeaseForm
from controller.ui.render import page, see_other
from controller.ui.session import UiSession, current_session

router = APIRouter(include_in_schema=False)


@router.get("/ui/leases", response_class=HTMLResponse)
def leases_page(
    request: Request,
    state: str = Query("", max_length=16),
    tenant: str = Query("", max_length=128),
    session: UiSession = Depends(current_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    rows = through_api(
        lambda: leases_api.list_leases(
            tenant=tenant or None, state=state or None, limit=200, offset=0, principal=session.principal, db=db
        )
    )
    return page(request, "leases.html", session, title="Leases", leases=rows, state=state, tenant=tenant)


def what_to_use(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per node: host, CUDA_VISIBLE_DEVICES, namespace, address and env, from the backend's ``result``."""
    if not result:
        return []
    nodes = result.get("nodes") or [result]
    out = []
    for node in nodes:
        env = dict(node.get("env") or {})
        out.append(
            {
                "host": node.get("host") or result.get("host"),
                "cuda_visible_devices": node.get("cuda_visible_devices") or env.get("CUDA_VISIBLE_DEVICES"),
                "namespace": node.get("namespace") or result.get("namespace"),
                "address": node.get("address") or node.get("ip") or result.get("address"),
                "env": env,
            }
        )
    return out


@router.get("/ui/leases/new", response_class=HTMLResponse)
def new_lease_page(request: Request, session: UiSession = Depends(current_session)) -> HTMLResponse:
    return _form_page(request, session, LeaseForm())


def _form_page(
    request: Request,
    session: UiSession,
    form: LeaseForm,
    status: int = 200,
    preview: dict[str, Any] | None = None,
    refusal: dict[str, Any] | None = None,
    error: str = "",
) -> HTMLResponse:
    candidates = drawing.candidate_hosts(refusal.get("candidates")) if refusal else 0
    steps = drawing.funnel_steps(candidates, refusal.get("filters") or []) if refusal else []
    return page(
        request, "lease_new.html", session, status, title="Request a lease", form=form, kinds=KINDS,
        topologies=TOPOLOGIES, policies=POLICIES, preview=preview, refusal=refusal, steps=steps, candidates=candidates,
        funnel_width=drawing.FUNNEL_W, error=error, idempotency_key=secrets.token_urlsafe(16),
    )  # fmt: skip


@router.post("/ui/leases/new", response_class=HTMLResponse)
async def request_lease(
    request: Request,
    session: UiSession = Depends(current_session),
    settings: Settings = Depends(get_settings),
) -> Response:
    """``op=preview``: the dry run (nothing claimed); ``op=create``: place and claim, then show the lease."""
    fields = await checked_form(request, session)
    form = LeaseForm.from_fields(fields)
    if session.principal.role is Role.tenant:
        form.tenant = session.principal.tenant or ""
    try:
        body = form.request()
    except UiError as exc:
        return _form_page(request, session, form, exc.status, error=exc.message)
    svc: LeaseService = request.app.state.leases
    tenant = form.tenant or None
    try:
        if fields.get("op") == "create":
            key = fields.get("idempotency_key") or None
            lease = await run_in_threadpool(
                leases_api.create_lease, response=Response(), body=body, idempotency_key=key, tenant=tenant,
                principal=session.principal, svc=svc, settings=settings,
            )  # fmt: skip
            return see_other(f"/ui/leases/{lease.id}")
        plan = await run_in_threadpool(
            leases_api.dry_run, body=body, tenant=tenant, principal=session.principal, svc=svc, settings=settings
        )
        return _form_page(request, session, form, preview=plan)
    except Problem as exc:
        if exc.slug == "no-capacity":
            return _form_page(request, session, form, 409, refusal=exc.extensions, error=exc.detail)
        return _form_page(request, session, form, exc.status, error=exc.detail)


@router.get("/ui/leases/{lease_id}", response_class=HTMLResponse)
def lease_page(
    request: Request, lease_id: str, session: UiSession = Depends(current_session), db: Database = Depends(get_db)
) -> HTMLResponse:
    lease = through_api(lambda: leases_api.visible_lease(db, session.principal, lease_id))
    finished = lease.state in ("released", "failed")
    end = _utc(lease.updated_at) if finished else datetime.now(UTC)
    marks = drawing.timeline([(_utc(t.at), t.to_state, t.reason) for t in lease.transitions], end)
    return page(
        request, "lease.html", session, title=f"Lease {lease.id}", lease=lease, marks=marks, use=what_to_use(lease.result),
        timeline_width=drawing.TIMELINE_W,
    )  # fmt: skip


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite hands back naive UTC times


@router.post("/ui/leases/{lease_id}/release")
async def release(
    request: Request, lease_id: str, session: UiSession = Depends(current_session), db: Database = Depends(get_db)
) -> Response:
    await checked_form(request, session)
    svc: LeaseService = request.app.state.leases

    def run() -> None:
        through_api(lambda: leases_api.release_lease(lease_id=lease_id, principal=session.principal, db=db, svc=svc))

    await run_in_threadpool(run)
    return see_other(f"/ui/leases/{lease_id}")
