"""The HTTP request handler: routing, CRUD, patches, server-side apply, pod logs and watches.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import yaml

from devservices.kube_apply import ApplyConflict, manager_from_user_agent, record_update, server_side_apply
from devservices.kube_emulator.discovery import KUBE_VERSION, _group, _group_list, _resource_list
from devservices.kube_emulator.patch import json_patch, merge_patch
from devservices.kube_emulator.resources import RESOURCE_BY_PLURAL, ApiError, ResourceType
from devservices.kube_emulator.selectors import field_selector_matches, label_selector_matches
from devservices.kube_emulator.state import WatchEvent, _tombstone
from devservices.kube_rbac import Forbidden, Unauthorized, verb_of

if TYPE_CHECKING:
    from devservices.kube_emulator.server import _Server

# DELETE answers with the deleted object for these kinds (the client deserializes it so), else a Status.
_DELETE_RETURNS_OBJECT = {"Pod", "Service", "ServiceAccount", "ResourceQuota", "LimitRange", "Namespace", "MPIJob"}


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid {name} "{value}": must be an integer') from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read failures, not access logs
        pass

    # plumbing
    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self, *, yaml_body: bool = False) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return yaml.safe_load(raw) if yaml_body else json.loads(raw)
        except (ValueError, yaml.YAMLError):
            raise ApiError(400, "BadRequest", f"request body is not {'YAML' if yaml_body else 'JSON'}") from None

    def _manager(self, query: dict[str, str]) -> str:
        """The write's field manager: ``fieldManager``, else the User-Agent's product, as kube-apiserver does."""
        return query.get("fieldManager") or manager_from_user_agent(self.headers.get("User-Agent"))

    def _dispatch(self, method: str) -> None:
        self.server.emulator.requests.append((method, self.path))
        try:
            self._route(method)
        except ApiError as exc:
            self._send_json(exc.code, exc.status_body())
        except Unauthorized:
            self._send_json(401, ApiError(401, "Unauthorized", "Unauthorized").status_body())
        except Forbidden as exc:
            self._send_json(403, ApiError(403, "Forbidden", str(exc)).status_body())
        except BrokenPipeError:
            pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # routing
    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = [s for s in parts.path.split("/") if s]
        if method == "GET" and segments == ["version"]:
            return self._send_json(200, KUBE_VERSION)
        if method == "GET" and segments == ["api"]:
            return self._send_json(
                200,
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
            )
        if method == "GET" and segments == ["apis"]:
            return self._send_json(200, _group_list())
        if segments[:1] == ["api"] and len(segments) >= 2:
            group, version, rest = "", segments[1], segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        elif segments[:1] == ["apis"] and len(segments) == 2 and method == "GET":
            return self._send_json(200, _group(segments[1]))
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "method not allowed")
            return self._send_json(200, _resource_list(group, version))

        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, rest[2]) in RESOURCE_BY_PLURAL:
            namespace, rest = rest[1], rest[2:]
        rtype = RESOURCE_BY_PLURAL.get((group, rest[0]))
        if rtype is None or rtype.version != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) >= 3 else None
        tokens = self.server.emulator.tokens
        try:
            caller = tokens.authenticate(self.server.emulator.state, self.headers.get("Authorization"))
            if caller is not None:
                verb = verb_of(method, name is not None, query.get("watch") in ("true", "1"))
                tokens.authorize(self.server.emulator.state, caller, verb, rtype, namespace, name, subresource)
        except (Unauthorized, Forbidden):
            self._body()  # read it, so the kept-alive connection is ready for the next request
            raise
        if subresource == "token" and rtype.kind == "ServiceAccount" and method == "POST" and name:
            return self._send_json(201, tokens.issue(self.server.emulator.state, namespace or "", name, self._body()))
        if subresource not in (None, "status", "log"):
            raise ApiError(404, "NotFound", f"subresource {subresource} is not supported by the emulator")
        if subresource == "log" and rtype.kind != "Pod":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        state = self.server.emulator.state

        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return self._watch(rtype, namespace, query)
                page = state.list_page(
                    rtype,
                    namespace,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                    limit=_int_param(query, "limit"),
                    token=query.get("continue"),
                    resource_version=query.get("resourceVersion"),
                )
                return self._send_json(200, page)
            if method == "POST":
                if rtype.namespaced and namespace is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                body = self._body()
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "request body must be an object")
                record_update({}, body, self._manager(query))
                return self._send_json(201, state.create(rtype, namespace, body))
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection is not supported")

        if subresource == "log":
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "logs are read-only")
            state.get(rtype, namespace, name)
            text = self.server.emulator.pod_log(namespace or "", name, query.get("container"))
            if "tailLines" in query:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else ""
            return self._send_text(200, text)

        if method == "GET":
            return self._send_json(200, state.get(rtype, namespace, name))
        if method == "PUT":
            body = self._body()
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "request body must be an object")
            with state.lock:
                if subresource is None:
                    record_update(state.get(rtype, namespace, name), body, self._manager(query))
                return self._send_json(200, state.update(rtype, namespace, name, body, subresource))
        if method == "PATCH":
            return self._patch(rtype, namespace, name, subresource, query)
        if method == "DELETE":
            obj = state.delete(rtype, namespace, name)
            if rtype.kind in _DELETE_RETURNS_OBJECT:
                return self._send_json(200, obj)
            return self._send_json(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": rtype.group,
                        "kind": rtype.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                },
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _patch(
        self, rtype: ResourceType, namespace: str | None, name: str, subresource: str | None, query: dict[str, str]
    ) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = self._body(yaml_body=content_type == "application/apply-patch+yaml")
        state = self.server.emulator.state
        with state.lock:  # read-modify-write in one step; the lock is re-entrant
            current = state.get(rtype, namespace, name)
            if content_type == "application/apply-patch+yaml":
                return self._apply(rtype, namespace, name, subresource, query, current, patch)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
                new = json_patch(current, patch)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch is a JSON object")
                new = merge_patch(current, patch)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
                )
            if subresource is None:
                record_update(current, new, self._manager(query))
            # A resourceVersion in the patch is a precondition; otherwise the patch applies to the current object.
            updated = state.update(rtype, namespace, name, new, subresource)
        return self._send_json(200, updated)

    def _apply(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        query: dict[str, str],
        current: dict[str, Any],
        applied: Any,
    ) -> None:
        """Server-side apply to an existing object (devservices/kube_apply.py). Creating by apply and
        applying to ``/status`` are not emulated."""
        if subresource is not None:
            raise ApiError(415, "UnsupportedMediaType", "server-side apply to a subresource is not emulated")
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager is required")
        if not isinstance(applied, dict):
            raise ApiError(400, "BadRequest", "an apply patch is an object")
        if applied.get("apiVersion") != rtype.api_version or applied.get("kind") != rtype.kind:
            raise ApiError(400, "BadRequest", f"apply: apiVersion and kind must be {rtype.api_version} {rtype.kind}")
        if (applied.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        try:
            new = server_side_apply(current, applied, manager, force=query.get("force") in ("true", "1"))
        except ApplyConflict as exc:
            causes = [
                {"type": "FieldManagerConflict", "message": f'conflict with "{who}"', "field": "." + ".".join(path)}
                for who, path in exc.conflicts
            ]
            raise ApiError(
                409, "Conflict", str(exc), {"name": name, "group": rtype.group, "kind": rtype.plural, "causes": causes}
            ) from None
        return self._send_json(200, self.server.emulator.state.update(rtype, namespace, name, new))

    def _watch(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        emulator = self.server.emulator
        state = emulator.state
        label_selector, field_selector = query.get("labelSelector"), query.get("fieldSelector")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or emulator.max_watch_seconds)
        timeout = min(timeout, emulator.max_watch_seconds)
        deadline = time.monotonic() + timeout

        def passes(obj: dict[str, Any] | None) -> bool:
            return (
                obj is not None
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and label_selector_matches(label_selector, obj["metadata"].get("labels") or {})
                and field_selector_matches(field_selector, obj)
            )

        def convert(event: WatchEvent) -> tuple[str, dict[str, Any]] | None:
            # As the apiserver's cacheWatcher: an object that starts matching the selectors is ADDED, one
            # that stops matching is DELETED (its previous state, with the event's resourceVersion).
            if event.rtype != rtype:
                return None
            now = event.type != "DELETED" and passes(event.obj)
            before = passes(event.prev)
            if now:
                return ("MODIFIED" if before else "ADDED"), event.obj
            if before and event.prev is not None:
                gone = _tombstone(event.prev)
                gone["metadata"]["resourceVersion"] = str(event.revision)
                return "DELETED", gone
            return None

        since = query.get("resourceVersion")
        expired: ApiError | None = None
        initial: list[dict[str, Any]] = []
        with state.lock:
            if since in (None, "", "0"):
                # No version: the current state as ADDED events, then changes.
                initial, _ = state.list(rtype, namespace, label_selector, field_selector)
                cursor = state.next_seq()
            else:
                try:
                    version = int(str(since))
                except ValueError:
                    raise ApiError(400, "BadRequest", f'invalid resource version "{since}"') from None
                if version < state.compacted_revision:
                    expired = ApiError(
                        410, "Expired", f"too old resource version: {version} ({state.compacted_revision + 1})"
                    )
                cursor = state.seq_after(version)
            seen_revision = state.revision
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        # This server closes the connection after a watch: say so, or the client's pool may reuse the
        # socket for its next request and have it fail with "Remote end closed connection".
        self.send_header("Connection", "close")
        self.end_headers()

        def emit(event_type: str, obj: dict[str, Any]) -> None:
            line = (json.dumps({"type": event_type, "object": obj}) + "\n").encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        try:
            if expired is not None:
                # The real server answers 200 and sends the 410 as an ERROR event, then ends the stream.
                emit("ERROR", expired.status_body())
            else:
                for obj in initial:
                    emit("ADDED", obj)
                while not emulator.stopping.is_set():
                    with state.lock:
                        while cursor >= state.next_seq():
                            remaining = deadline - time.monotonic()
                            if remaining <= 0 or emulator.stopping.is_set():
                                break
                            state.lock.wait(min(remaining, 0.5))
                        if cursor < state.event_base:
                            break  # this watcher fell behind the trimmed history: the server drops it
                        pending = state.events[cursor - state.event_base :]
                        cursor = state.next_seq()
                        seen_revision = state.revision
                    for event in pending:
                        converted = convert(event)
                        if converted is not None:
                            emit(*converted)
                    if time.monotonic() >= deadline:
                        if bookmarks:
                            # Every event up to seen_revision has been sent (or filtered out).
                            emit(
                                "BOOKMARK",
                                {
                                    "kind": rtype.kind,
                                    "apiVersion": rtype.api_version,
                                    "metadata": {"resourceVersion": str(seen_revision)},
                                },
                            )
                        break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True
