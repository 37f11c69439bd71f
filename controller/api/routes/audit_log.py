"""Admin: the audit log."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from controller.api.deps import Require, get_db
from controller.api.schemas import AuditOut
from controller.auth.tokens import Principal, Role
from controller.store.db import Database
from controller.store.models import AuditEntry

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditOut])
def list_audit(
    action: str | None = Query(None, description="Exact action, e.g. host.set-desired"),
    actor: str | None = None,
    target: str | None = None,
    result: str | None = Query(None, description="ok|failed"),
    since: datetime | None = None,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(Require(Role.admin)),
    db: Database = Depends(get_db),
) -> list[AuditOut]:
    """Newest first."""
    stmt = select(AuditEntry)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if target:
        stmt = stmt.where(AuditEntry.target == target)
    if result:
        stmt = stmt.where(AuditEntry.result == result)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    stmt = stmt.order_by(AuditEntry.id.desc()).limit(limit)
    with db.session() as session:
        return [
            AuditOut(
                id=e.id,
                at=e.at,
                actor=e.actor,
                role=e.role,
                action=e.action,
                target=e.target,
                result=e.result,
                detail=e.detail,
                request_id=e.request_id,
            )
            for e in session.scalars(stmt)
        ]
