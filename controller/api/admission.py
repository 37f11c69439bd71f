"""ASGI middleware that keeps the controller answering under load: a request body limit for every route and
a bound on agent requests in flight.

* **Body limit.** A request whose body is over ``max_body_bytes`` (default 1 MiB) is answered 413
  problem+json before any handler reads it: by its ``Content-Length`` when it sends one, else by counting the
  chunks as they arrive (the handler never sees a partial body).
* **What every handler may assume.** A NUL byte in the path or the query string (which no name holds and
  PostgreSQL cannot store or compare) is answered 422 before routing, and so is a JSON body holding the
  escape ``\\u0000`` anywhere (free-form documents included); a non-empty body must be JSON
  (``application/json`` or ``*/*+json``; the dashboard's forms under ``/ui/`` may also send
  ``application/x-www-form-urlencoded``), else 415.
* **Agent admission.** At most ``agent_max_in_flight`` agent requests (``/v1/agents/...``) are handled at once
  per worker process. Past that the controller answers 503 problem+json with ``Retry-After`` at once instead of
  letting requests queue into client timeouts; the value is spread over ``[retry_after_s, 2 x retry_after_s]``
  so a fleet that reconnects after an outage comes back spread out, and the agent honours it
  (``agent/runner.py``). Tenant and admin routes are not shed: their volume is small and a human waits.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from controller.observability.metrics import ApiMetrics

AGENT_PREFIX = "/v1/agents/"


class _BodyTooLarge(Exception):
    pass


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ApiMetrics,
        max_body_bytes: int,
        agent_max_in_flight: int,
        retry_after_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.agent_max_in_flight = agent_max_in_flight
        self.retry_after_s = retry_after_s
        self.rng = rng or random.Random()
        self.agent_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _refused_request(scope)
        if refusal is not None:
            await _problem(scope, send, *refusal, [])
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                receive, body = await self._buffered(receive)
            except _BodyTooLarge:
                await self._too_large(scope, send)
                return
            if b"\\u0000" in body and _JSON_NUL.search(body):  # the plain test first: the regex is slow
                # PostgreSQL text cannot hold U+0000 and no gpufabric field means one: refused before any handler.
                loc = ["body", *_nul_location(body)]
                where = ".".join(str(p) for p in loc)
                await _problem(
                    scope, send, 422, "validation-error", f"{where}: contains a NUL character (\\u0000)", [],
                    errors=[{"loc": loc, "msg": "NUL characters are not allowed", "type": "string_nul"}],
                )  # fmt: skip
                return
        if not scope["path"].startswith(AGENT_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.agent_in_flight >= self.agent_max_in_flight:
            self.metrics.agent_requests_shed.inc()
            retry = math.ceil(self.rng.uniform(self.retry_after_s, 2 * self.retry_after_s))
            await _problem(
                scope,
                send,
                503,
                "overloaded",
                f"{self.agent_in_flight} agent requests in flight (limit {self.agent_max_in_flight}); "
                f"retry after {retry} s",
                [(b"retry-after", str(retry).encode())],
            )
            return
        self.agent_in_flight += 1
        self.metrics.agent_in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.agent_in_flight -= 1
            self.metrics.agent_in_flight.dec()

    async def _buffered(self, receive: Receive) -> tuple[Callable[[], Awaitable[Message]], bytes]:
        """Read the body up to the limit (whether or not its length was announced), then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, body

    async def _too_large(self, scope: Scope, send: Send) -> None:
        self.metrics.requests_too_large.inc()
        await _problem(
            scope,
            send,
            413,
            "payload-too-large",
            f"the request body is over the limit of {self.max_body_bytes} bytes (GPUFABRIC_MAX_REQUEST_BODY_BYTES)",
            [(b"connection", b"close")],
        )


UI_PREFIX = "/ui/"

# A JSON string escape of U+0000 (``\u0000``), not preceded by an escaped backslash (``\\u0000`` is text).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _refused_request(scope: Scope) -> tuple[int, str, str] | None:
    """A problem for a request no route should see: NUL in the path or query, a body that is not JSON."""
    query = scope.get("query_string", b"")
    if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
        return 422, "validation-error", "the request path or query string contains a NUL byte"
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return None
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length")
    if length is not None and length.strip() == b"0":
        return None
    media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if not media_type:
        return None  # no declared type: FastAPI parses it as JSON or answers 422
    if media_type == b"application/json" or (media_type.startswith(b"application/") and media_type.endswith(b"+json")):
        return None
    if media_type == b"application/x-www-form-urlencoded" and scope["path"].startswith(UI_PREFIX):
        return None  # the dashboard's HTML forms (controller/ui); it refuses NUL in fields itself
    return 415, "unsupported-media-type", f"request bodies are application/json, not {media_type.decode('latin-1')}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _nul_location(body: bytes) -> list[str | int]:
    """Where in a JSON body the first string (value or key) holding U+0000 is (empty if it does not parse)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []

    def walk(node: object, path: list[str | int]) -> list[str | int] | None:
        if isinstance(node, str):
            return path if "\x00" in node else None
        if isinstance(node, dict):
            for k, v in node.items():
                found = [*path, k] if "\x00" in k else walk(v, [*path, k])
                if found is not None:
                    return found
        if isinstance(node, list):
            for i, v in enumerate(node):
                found = walk(v, [*path, i])
                if found is not None:
                    return found
        return None

    return walk(doc, []) or []


async def _problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    detail: str,
    headers: list[tuple[bytes, bytes]],
    **extra: object,
) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + slug,
            "title": PROBLEM_TYPES[slug],
            "status": status,
            "detail": detail,
            "instance": scope["path"],
            **extra,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
