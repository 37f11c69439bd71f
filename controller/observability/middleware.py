"""ASGI middleware: request ids (X-Request-ID in and out), access log and latency histogram."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.observability.context import reset_request_id, set_request_id
from controller.observability.metrics import ApiMetrics

log = logging.getLogger("gpufabric.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = set_request_id(request_id)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(elapsed)
            if template not in ("/metrics", "/healthz"):
                # Agent reports that succeed are the bulk of the traffic (thousands a second on a large fleet):
                # logged at DEBUG; their failures, sheds and every other route at INFO.
                quiet = status < 300 and template.startswith("/v1/agents/")
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"route": template, "status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            reset_request_id(token)


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key == name:
            return str(value.decode("latin-1"))
    return None
