"""Unauthenticated operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from controller.api.problems import problem_response
from controller.store.schema import SchemaError, require_current_schema

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={
        503: {
            "description": "The database is unreachable or its schema is not this controller's (problem+json)",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    },
)
def readyz(request: Request) -> JSONResponse | dict[str, str]:
    """The database is reachable and its schema is this controller's."""
    db = request.app.state.db
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        require_current_schema(db.engine)
    except SchemaError as exc:
        return problem_response(request, 503, "unavailable", str(exc))
    except Exception as exc:
        return problem_response(request, 503, "unavailable", f"database unreachable: {type(exc).__name__}")
    return {"status": "ready", "database": db.dialect}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
