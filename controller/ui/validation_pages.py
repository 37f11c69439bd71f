"""Admins: NCCL validations — busbw against message size (log2 axis) with the expected line and the verdict —
the hosts' validation states (quarantined ones first) and the schedules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from controller.api.deps import get_db
from controller.store.db import Database
from controller.store.models import Host
from controller.ui import drawing
from controller.ui.errors import through_api
from controller.ui.render import page
from controller.ui.session import UiSession, admin_session
from controller.validation import api as validation_api
from controller.validation.schemas import RunOut, ValidationOut

router = APIRouter(include_in_schema=False)
CURVES_ON_LIST = 3


@dataclass
class RunView:
    run: RunOut
    chart: drawing.Chart | None
    expected: float | None
    threshold: float | None
    verdict: dict[str, Any]


def run_view(run: RunOut) -> RunView:
    verdict = run.verdict or {}
    expected = verdict.get("expected_busbw_gbps") or (run.expected or {}).get("busbw_gbps")
    threshold = verdict.get("threshold_busbw_gbps")
    return RunView(run, drawing.nccl_chart(run.rows, expected, threshold), expected, threshold, verdict)


def simulated_hosts(db: Database, names: list[str]) -> list[str]:
    """The hosts of a validation that run the NVML simulator: their curves come from stand-in output."""
    if not names:
        return []
    with db.session() as s:
        return sorted(s.scalars(select(Host.hostname).where(Host.hostname.in_(names), Host.simulated.is_(True))))


def _detail(request: Request, session: UiSession, db: Database, validation_id: str) -> ValidationOut:
    return through_api(
        lambda: validation_api.show(validation_id=validation_id, request=request, _=session.principal, db=db)
    )


@router.get("/ui/validations", response_class=HTMLResponse)
def validations_page(
    request: Request, session: UiSession = Depends(admin_session), db: Database = Depends(get_db)
) -> HTMLResponse:
    p = session.principal
    summaries = validation_api.list_validations(request=request, status=None, host=None, limit=100, _=p, db=db)
    recent = [_detail(request, session, db, v.id) for v in summaries[:CURVES_ON_LIST]]
    states = validation_api.list_host_states(state=None, _=p, db=db)
    states.sort(key=lambda h: (h.state != "quarantined", h.admin_state != "quarantined", h.host))
    return page(
        request, "validations.html", session, title="Validations", summaries=summaries,
        recent=[(v, [run_view(r) for r in v.runs], simulated_hosts(db, v.hosts)) for v in recent],
        states=states, schedules=validation_api.list_schedules(_=p, db=db),
    )  # fmt: skip


@router.get("/ui/validations/{validation_id}", response_class=HTMLResponse)
def validation_page(
    request: Request, validation_id: str, session: UiSession = Depends(admin_session), db: Database = Depends(get_db)
) -> HTMLResponse:
    v = _detail(request, session, db, validation_id)
    return page(
        request, "validation.html", session, title=f"Validation {v.id}", v=v, runs=[run_view(r) for r in v.runs],
        simulated=simulated_hosts(db, v.hosts),
    )  # fmt: skip
