"""Admins: one host — every GPU drawn (MIG instances to scale, replicas, vGPUs), health events on a timeline,
and drain / undrain / quarantine after a confirmation, through the REST API's own route functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from controller.api.deps import get_db
from controller.api.routes import hosts as hosts_api
from controller.api.schemas import AdminStateIn
from controller.fleet.states import AdminState
from controller.store.db import Database
from controller.store.models import Host
from controller.ui import drawing, fleet_data
from controller.ui.errors import UiError, through_api
from controller.ui.forms import checked_form
from controller.ui.render import page, see_other
from controller.ui.session import UiSession, admin_session
from controller.validation.api import host_validation_out

router = APIRouter(include_in_schema=False)

ACTIONS: dict[str, tuple[str, str, AdminState]] = {
    "drain": ("Drain", "No new placements on this host; leases already on it stay.", "drained"),
    "undrain": ("Undrain", "Return the host to service (also ends a quarantine).", "active"),
    "quarantine": ("Quarantine", "Take the host out of service as faulty.", "quarantined"),
}


def health_events(inventory: dict[str, Any] | None) -> list[tuple[datetime, str, str]]:
    """(since, code, 'GPU n: message') of every health reason the host's last inventory carries (XID, ECC ...)."""
    events: list[tuple[datetime, str, str]] = []
    for gpu in (inventory or {}).get("gpus") or []:
        for reason in (gpu.get("health") or {}).get("reasons") or []:
            since = reason.get("since")
            try:
                at = datetime.fromisoformat(since) if isinstance(since, str) else None
            except ValueError:
                at = None
            if at is not None:
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                detail = f"GPU {gpu.get('index')}: {reason.get('message', '')} ({reason.get('severity', '')})"
                events.append((at, str(reason.get("code", "")), detail))
    return events


def vgpu_types(inventory: dict[str, Any] | None) -> dict[str, list[str]]:
    """GPU UUID -> the vGPU types its driver offers, ``name (n max)``, marked creatable ones first."""
    out: dict[str, list[str]] = {}
    for gpu in (inventory or {}).get("gpus") or []:
        vgpu = gpu.get("vgpu") or {}
        creatable = set(vgpu.get("creatable") or [])
        types = sorted(vgpu.get("supported") or [], key=lambda t: (t.get("id") not in creatable, t.get("name", "")))
        if types:
            out[str(gpu.get("uuid"))] = [
                f"{t.get('name')} ({t.get('max_instances')} max{', creatable now' if t.get('id') in creatable else ''})"
                for t in types
            ]
    return out


@router.get("/ui/hosts/{hostname}", response_class=HTMLResponse)
def host_page(
    request: Request, hostname: str, session: UiSession = Depends(admin_session), db: Database = Depends(get_db)
) -> HTMLResponse:
    detail = through_api(lambda: hosts_api.show_host(host=hostname, _=session.principal, db=db))
    with db.session() as s:
        row = s.scalar(select(Host).where(Host.hostname == hostname))
        if row is None:
            raise UiError(404, f"host {hostname} not found")
        claims = fleet_data.live_claims(s, [row.id])
        tenants = fleet_data.lease_tenants(s, set(claims.values()))
        validation = host_validation_out(s, row)
    gpus = [drawing.gpu_drawing(d.model_dump(mode="json"), claims) for d in detail.devices]
    events = health_events(detail.inventory)
    marks = drawing.timeline(events, datetime.now(UTC))
    return page(
        request,
        "host.html",
        session,
        title=f"Host {hostname}",
        host=detail,
        gpus=gpus,
        tenants=tenants,
        validation=validation,
        marks=marks,
        vgpus=vgpu_types(detail.inventory),
        actions=ACTIONS,
        gpu_width=drawing.GPU_WIDTH,
        gpu_height=drawing.GPU_HEIGHT,
        timeline_width=drawing.TIMELINE_W,
    )


def _action(name: str) -> tuple[str, str, AdminState]:
    if name not in ACTIONS:
        raise UiError(404, f"no host action {name!r} (drain, undrain, quarantine)")
    return ACTIONS[name]


@router.get("/ui/hosts/{hostname}/{action}", response_class=HTMLResponse)
def confirm_action(
    request: Request,
    hostname: str,
    action: str,
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    """The confirmation step: what the action does, a reason, and the button that does it."""
    label, explanation, _ = _action(action)
    detail = through_api(lambda: hosts_api.show_host(host=hostname, _=session.principal, db=db))
    return page(
        request, "confirm.html", session, title=f"{label} {hostname}?", host=detail, action=action, label=label,
        explanation=explanation,
    )  # fmt: skip


@router.post("/ui/hosts/{hostname}/{action}")
async def do_action(
    request: Request,
    hostname: str,
    action: str,
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> Response:
    fields = await checked_form(request, session)
    _, _, state = _action(action)
    try:
        body = AdminStateIn(reason=fields.get("reason", ""))
    except ValidationError as exc:
        raise UiError(422, f"reason: {exc.errors()[0]['msg']}") from None

    def run() -> None:
        through_api(lambda: hosts_api.set_admin_state(request, db, session.principal, hostname, state, body.reason))

    await run_in_threadpool(run)
    return see_other(f"/ui/hosts/{hostname}")
