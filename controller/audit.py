"""The audit log: every mutation, who did it, when, and whether it worked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from controller.auth.tokens import Principal
from controller.observability.context import current_request_id
from controller.store.db import Database
from controller.store.models import AuditEntry


def record(
    session: Session,
    principal: Principal | None,
    action: str,
    target: str,
    result: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            actor=principal.actor if principal else "system",
            role=principal.role.value if principal else "system",
            action=action,
            target=target,
            result=result,
            detail=detail or {},
            request_id=current_request_id() or "",
        )
    )


@contextmanager
def mutation(
    db: Database, principal: Principal | None, action: str, target: str, detail: dict[str, Any] | None = None
) -> Iterator[tuple[Session, dict[str, Any]]]:
    """A unit of work that is audited: on success in the same transaction, on failure in its own.

    Yields the session and a mutable ``detail`` dict the caller may add to.
    """
    info: dict[str, Any] = dict(detail or {})
    try:
        with db.session() as session:
            yield session, info
            record(session, principal, action, target, "ok", info)
    except Exception as exc:
        info["error"] = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        with db.session() as session:
            record(session, principal, action, target, "failed", info)
        raise
