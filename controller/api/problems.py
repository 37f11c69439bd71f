"""RFC 9457 problem details: every API error is ``application/problem+json`` with a stable ``type``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.backends.contract import NotSupported
from controller.leases.state import IllegalTransition as LeaseIllegalTransition
from controller.statemachine import IllegalTransition
from controller.store.errors import is_transient

PROBLEM_BASE = "https://gpufabric.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = logging.getLogger("gpufabric.api")

# Problem types a client may rely on (documented in docs/api.md).
PROBLEM_TYPES: dict[str, str] = {
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed for this credential",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "validation-error": "Request is not valid",
    "conflict": "Conflicts with the current state",
    "illegal-transition": "Not allowed from the current state",
    "stale-generation": "Inventory generation is stale",
    "unsupported-protocol": "Unsupported protocol version",
    "bad-request": "Bad request",
    "no-capacity": "No capacity for this request",
    "quota-exceeded": "Over quota",
    "idempotency-key-reused": "Idempotency key reused with a different request",
    "placement-conflict": "Lost every claim attempt to concurrent requests; retry",
    "internal-error": "Internal error",
    "database-busy": "The database asked to retry (a deadlock, a serialization failure or a busy database); retry",
    "unavailable": "Service unavailable",
    "overloaded": "Too many agent requests in flight; retry after the Retry-After interval",
    "payload-too-large": "Request body too large",
    "host-registered": "Host already registered; re-register with its own credential or have an admin reset it",
    "device-conflict": "A GPU in this report belongs to another host",
    "unsupported-media-type": "Request body is not JSON",
    "not-supported": "Not supported by this backend kind",
    "lease-failed": "The lease failed",
}

_STATUS_SLUG = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    422: "validation-error",
    503: "unavailable",
}


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}  # e.g. Location of a lease that failed


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", f"{what} not found")


def conflict(detail: str, **ext: Any) -> Problem:
    return Problem(409, "conflict", detail, **ext)


def problem_response(
    request: Request, status: int, slug: str, detail: str, headers: dict[str, str] | None = None, /, **ext: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": PROBLEM_TYPES.get(slug, HTTPStatus(status).phrase),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(jsonable_encoder(ext))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        headers.update(exc.headers)
        return problem_response(request, exc.status, exc.slug, exc.detail, headers or None, **exc.extensions)

    @app.exception_handler(IllegalTransition)
    async def _illegal_transition(request: Request, exc: IllegalTransition) -> JSONResponse:
        return problem_response(request, 409, "illegal-transition", str(exc), **exc.problem_extensions())

    @app.exception_handler(LeaseIllegalTransition)
    async def _illegal_lease_transition(request: Request, exc: LeaseIllegalTransition) -> JSONResponse:
        # A lease moved meanwhile (another replica, the expiry job): the client re-reads it and decides again.
        return problem_response(request, 409, "illegal-transition", str(exc), **exc.problem_extensions())

    @app.exception_handler(NotSupported)
    async def _not_supported(request: Request, exc: NotSupported) -> JSONResponse:
        return problem_response(
            request, 422, "not-supported", str(exc), kind=exc.kind, operation=exc.operation, reason=exc.reason
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _STATUS_SLUG.get(exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem_response(request, exc.status_code, slug, detail, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return problem_response(request, 422, "validation-error", f"{where}: {first['msg']}", errors=errors)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            # The database rolled the failing unit of work back (or no connection was free), and the same request may
            # well succeed at once: a client retries after Retry-After; not a bug to chase. A request that commits
            # several units of work (a lease create claims, then provisions) may have kept the earlier ones, which is
            # what the Idempotency-Key of a retried create is for.
            log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
            detail = (
                "the database rolled this request's work back (a deadlock or a busy database); retry after "
                "Retry-After, a lease create with the same Idempotency-Key"
            )
            return problem_response(request, 503, "database-busy", detail, {"Retry-After": "1"})
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal-error", "internal error; see the controller log")
