"""The audit log: every mutation, who did it, when, and whether it worked.

Rows hold bounded excerpts of what a caller sent: every string is cut to ``MAX_STRING`` characters (NUL bytes,
which PostgreSQL cannot store, become U+FFFD), ``target`` to its column, and a ``detail`` whose JSON is still
over ``MAX_DETAIL_BYTES`` is replaced by an excerpt of it. A refused 10 MB request writes a row of a few KiB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from controller.auth.tokens import Principal
from controller.observability.context import current_request_id
from controller.store.db import Database
from controller.store.models import AuditEntry

MAX_STRING = 1024
MAX_DETAIL_BYTES = 8192
MAX_ITEMS = 100


def excerpt(value: Any, limit: int = MAX_STRING) -> Any:
    """``value`` with strings cut to ``limit`` characters, NUL bytes replaced and containers cut to
    ``MAX_ITEMS`` entries, at any depth."""
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value) - limit} more characters)"
    if isinstance(value, dict):
        items = list(value.items())
        out = {excerpt(str(k), 128): excerpt(v, limit) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["..."] = f"{len(items) - MAX_ITEMS} more entries"
        return out
    if isinstance(value, list | tuple):
        return [excerpt(v, limit) for v in value[:MAX_ITEMS]] + (
            [f"... {len(value) - MAX_ITEMS} more items"] if len(value) > MAX_ITEMS else []
        )
    return value


def bounded_detail(detail: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = excerpt(detail)
    text = json.dumps(out, default=str)
    if len(text.encode()) > MAX_DETAIL_BYTES:
        return {"excerpt": text[: MAX_DETAIL_BYTES // 2], "truncated_bytes": len(text.encode())}
    return out


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
            actor=excerpt(principal.actor if principal else "system", 160),
            role=principal.role.value if principal else "system",
            action=action,
            target=excerpt(target, 200),
            result=result,
            detail=bounded_detail(detail or {}),
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
