"""The OpenAPI document: FastAPI's, plus what FastAPI cannot see.

Every operation lists each status code it can answer and its content type: errors are
``application/problem+json`` (:class:`ProblemDocument`), never FastAPI's default ``HTTPValidationError``. Statuses
that follow from the route's shape are added by rule (a role: 401/403; a path parameter: 404; parameters or a
body: 422; a body: 400/413/415; an agent route: 503); the domain refusals a handler raises (409 conflicts,
404 for a named resource in a body) are listed in :data:`RAISES`. ``tests/controller/test_api_fuzz.py`` runs
schemathesis against this document: a status or content type missing here fails it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import declared_roles, role_names
from controller.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, PROBLEM_TYPES


class ProblemDocument(BaseModel):
    """RFC 9457 problem details; ``type`` is one of ``x-gpufabric-problem-types``. Some problems carry more
    members (``errors`` for validation, ``filters``/``nearest`` for ``no-capacity``, ...)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="Stable URI of the problem type")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path")
    request_id: str | None = None


# Refusals a handler raises beyond the rules in the module docstring: (method, path) -> {status: why}.
RAISES: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/v1/leases"): {
        409: "no-capacity (nothing fits; per-filter counts), placement-conflict (retry), or lease-failed (the lease "
        "was stored but failed before the answer: `lease_id`, `failure_reason`, `lease`; header `Location`)",
    },
    ("POST", "/v1/placements:dry-run"): {409: "no-capacity: nothing fits (per-filter counts, the nearest fit)"},
    ("DELETE", "/v1/leases/{lease_id}"): {409: "conflict: the lease cannot be released in its state"},
    ("POST", "/v1/backends"): {409: "conflict: a backend of that name exists"},
    ("DELETE", "/v1/backends/{name}"): {409: "conflict: the backend still has hosts"},
    ("POST", "/v1/pools"): {409: "conflict: a pool of that name exists"},
    ("DELETE", "/v1/pools/{name}"): {409: "conflict: the pool still has hosts"},
    ("POST", "/v1/validations"): {404: "not-found: a named host or backend does not exist", 409: "conflict"},
    ("POST", "/v1/validations/schedules"): {409: "conflict: a schedule of that name exists"},
    ("POST", "/v1/agents/register"): {
        400: "unsupported-protocol",
        404: "not-found: the named backend does not exist",
        409: "conflict: the host is registered and this credential may not take it over",
    },
    ("PUT", "/v1/agents/{host}/inventory"): {
        400: "bad-request: the inventory names another host, or unsupported-protocol",
        409: "stale-generation, or conflict: a GPU UUID already on another host",
    },
    ("POST", "/v1/agents/{host}/heartbeat"): {409: "stale-generation"},
    ("POST", "/v1/agents/{host}/tasks/{task_id}/result"): {
        409: "illegal-transition: the task is finished or cancelled (current state, allowed moves)"
    },
    ("POST", "/v1/hosts/{host}/tasks/{task_id}/cancel"): {
        409: "illegal-transition: the task is finished or cancelled (current state, allowed moves)"
    },
    ("POST", "/v1/hosts/{host}/drain"): {409: "illegal-transition: the host is quarantined (undrain it first)"},
    ("POST", "/v1/devices/{uuid}/drain"): {409: "illegal-transition: the GPU is quarantined (undrain it first)"},
}

_WHY = {
    400: "Malformed request (problem+json, bad-request)",
    401: "Missing or unknown token (problem+json, unauthorized)",
    403: "Role not allowed, or another tenant's resource (problem+json, forbidden / quota-exceeded)",
    404: "Not found (problem+json, not-found)",
    409: "Conflicts with the current state (problem+json)",
    413: "Request body over max_request_body_bytes (problem+json, payload-too-large)",
    415: "Request body is not application/json (problem+json, unsupported-media-type)",
    422: "A parameter or the body is not valid (problem+json, validation-error, with `errors`)",
    500: "Internal error (problem+json, internal-error); see the controller log for the request id",
    503: "Unavailable (problem+json)",
}


def _problem(status: int, why: str | None = None) -> dict[str, Any]:
    return {
        "description": why or _WHY[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _statuses(route: APIRoute, method: str, op: dict[str, Any]) -> Iterable[tuple[int, str | None]]:
    if declared_roles(route):
        yield 401, None
        yield 403, None
    if "{" in route.path:
        yield 404, None
    if op.get("parameters") or "requestBody" in op:
        yield 422, None
    if "requestBody" in op:
        yield 400, None
        yield 413, None
        yield 415, None
    if route.path.startswith("/v1/agents/"):
        yield 503, "Too many agent requests in flight (problem+json, overloaded); retry after Retry-After seconds"
    yield from RAISES.get((method, route.path), {}).items()
    yield 500, None


def build_openapi(app: FastAPI, routes: list[APIRoute]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for route in routes:
        roles = declared_roles(route)
        for method in route.methods or ():
            op = schema["paths"].get(route.path, {}).get(method.lower())
            if op is None:
                continue
            op["x-gpufabric-roles"] = role_names(roles) if roles else []
            if roles:
                op["security"] = [{"bearer": []}]
            responses = op.setdefault("responses", {})
            for status, why in _statuses(route, method, op):
                responses[str(status)] = _problem(status, why)
            if "503" in responses and route.path.startswith("/v1/agents/"):
                responses["503"]["headers"] = {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}
                }
    schema["x-gpufabric-problem-types"] = {PROBLEM_BASE + k: v for k, v in PROBLEM_TYPES.items()}
    app.openapi_schema = schema
    return schema
