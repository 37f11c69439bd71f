"""Admins: the audit log, newest first, filtered as ``GET /v1/audit`` filters it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from controller.api.deps import get_db
from controller.api.routes.audit_log import list_audit
from controller.store.db import Database
from controller.ui.render import page
from controller.ui.session import UiSession, admin_session

router = APIRouter(include_in_schema=False)


def text_filter() -> Any:
    """A fresh ``Query`` per parameter: FastAPI binds a parameter's name to its FieldInfo, so one shared
    object would make every filter read the first one's query parameter."""
    return Query("", max_length=128)


@router.get("/ui/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    action: str = text_filter(),
    actor: str = text_filter(),
    target: str = text_filter(),
    result: str = Query("", pattern="^(|ok|failed)$"),
    session: UiSession = Depends(admin_session),
    db: Database = Depends(get_db),
) -> HTMLResponse:
    entries = list_audit(
        action=action or None, actor=actor or None, target=target or None, result=result or None, since=None,
        limit=200, _=session.principal, db=db,
    )  # fmt: skip
    filters = {"action": action, "actor": actor, "target": target, "result": result}
    return page(request, "audit.html", session, title="Audit log", entries=entries, filters=filters)
