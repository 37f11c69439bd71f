"""A stateful Kubernetes API emulator over HTTP for the official ``kubernetes`` client.

No kube-apiserver can be installed on the test machines, so this speaks enough of the API for
the code under test: discovery, CRUD with PUT/PATCH (merge, strategic-as-merge, JSON patch), label
and field selectors, watch with ``timeoutSeconds``, metadata (uid, resourceVersion,
creationTimestamp, generation), Status bodies for errors, and pod logs. Fidelity limits are listed
in docs/testing.md, section "Kubernetes API emulator".

Built on the standard library (``ThreadingHTTPServer``) rather than kmock: kmock 0.8 lacked PUT,
selectors, metadata, watch timeouts and text logs, and closing those gaps was most of the work.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-gpufabric-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, short_names=("ns",)),
    ResourceType("", "v1", "nodes", "Node", False, short_names=("no",)),
    ResourceType("", "v1", "pods", "Pod", True, short_names=("po",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, has_status=False, short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, has_status=False),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, has_status=False, short_names=("sa",)),
    ResourceType("", "v1", "services", "Service", True, short_names=("svc",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, short_names=("quota",)),
    ResourceType("", "v1", "events", "Event", True, has_status=False, short_names=("ev",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, short_names=("ds",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, short_names=("deploy",)),
    ResourceType("kubeflow.org", "v2beta1", "mpijobs", "MPIJob", True),
)

# DELETE answers with the deleted object for these kinds (the client deserializes it so), else a Status.
_DELETE_RETURNS_OBJECT = {"Pod", "Service", "ServiceAccount", "ResourceQuota", "Namespace", "MPIJob"}

# Objects in these groups get metadata.generation bumped on spec changes, as the real server does.
_GENERATION_KINDS = {"Deployment", "DaemonSet", "MPIJob"}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status_body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors ---------------------------------------------------------------------------------

_SET_REQ = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for req in _split_selector(selector):
        set_match = _SET_REQ.match(req)
        if set_match:
            key, op, values = set_match[1], set_match[2], {v.strip() for v in set_match[3].split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    if not selector:
        return True
    for req in _split_selector(selector):
        if "!=" in req:
            path, value = (s.strip() for s in req.split("!=", 1))
            if (_field(obj, path) or "") == value:
                return False
        else:
            path, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if (_field(obj, path) or "") != value:
                return False
    return True


# -- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)
    for op in operations:
        try:
            kind, tokens = op["op"], _pointer(op["path"])
            if kind in ("move", "copy"):
                source = _pointer(op["from"])
                src_parent = _parent(doc, source)
                value = src_parent[int(source[-1])] if isinstance(src_parent, list) else src_parent[source[-1]]
                value = copy.deepcopy(value)
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
                continue
            if not tokens:
                if kind in ("add", "replace"):
                    doc = copy.deepcopy(op["value"])
                    continue
                raise ApiError(422, "Invalid", f"cannot {kind} the whole document")
            parent = _parent(doc, tokens)
            last = tokens[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, copy.deepcopy(op["value"]))
                elif kind == "remove":
                    parent.pop(index)
                elif kind == "replace":
                    parent[index] = copy.deepcopy(op["value"])
                elif kind == "test" and parent[index] != op["value"]:
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
            else:
                if kind == "add":
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "remove":
                    del parent[last]
                elif kind == "replace":
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "test" and parent.get(last) != op["value"]:
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
        except ApiError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json patch {op.get('op')} {op.get('path')}: {exc!r}") from None
    return doc


# -- the store ---------------------------------------------------------------------------------


@dataclass
class WatchEvent:
    revision: int
    rtype: ResourceType
    type: str
    obj: dict[str, Any]


class KubeState:
    """All objects, one global resourceVersion counter, and an event log watchers follow."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.revision = 1
            self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
            self.events: list[WatchEvent] = []
            self.logs: dict[tuple[str, str, str | None], str] = {}
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self._create(RESOURCE_BY_PLURAL[("", "namespaces")], None, {"metadata": {"name": ns}})
            self.lock.notify_all()

    @staticmethod
    def _key(rtype: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str | None, str]:
        return (rtype.group, rtype.plural, namespace if rtype.namespaced else None, name)

    def _bump(self, rtype: ResourceType, event_type: str, obj: dict[str, Any], new_version: bool = True) -> None:
        if new_version:
            self.revision += 1
            obj["metadata"]["resourceVersion"] = str(self.revision)
        self.events.append(WatchEvent(self.revision, rtype, event_type, copy.deepcopy(obj)))
        self.lock.notify_all()

    def _require_namespace(self, rtype: ResourceType, namespace: str | None) -> None:
        if rtype.namespaced and (("", "namespaces", None, namespace or "")) not in self.objects:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )

    def _create(self, rtype: ResourceType, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{rtype.kind} is invalid: metadata.name: Required value")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            self._require_namespace(rtype, namespace)
        else:
            meta.pop("namespace", None)
        key = self._key(rtype, namespace, meta["name"])
        if key in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.plural} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": rtype.group, "kind": rtype.plural},
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.pop("deletionTimestamp", None)
        if rtype.kind in _GENERATION_KINDS:
            meta["generation"] = 1
        if rtype.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if rtype.kind == "Pod":
            obj.setdefault("status", {"phase": "Pending"})
        self.objects[key] = obj
        self._bump(rtype, "ADDED", obj)
        return copy.deepcopy(obj)

    # public operations (all under the lock)
    def create(self, rtype: ResourceType, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self._create(rtype, namespace, body)

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self._key(rtype, namespace, name))
            if obj is None:
                raise _not_found(rtype, name)
            return copy.deepcopy(obj)

    def list(
        self, rtype: ResourceType, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (group, plural, ns, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                if group == rtype.group
                and plural == rtype.plural
                and (namespace is None or ns == namespace)
                and label_selector_matches(label_selector, obj["metadata"].get("labels") or {})
                and field_selector_matches(field_selector, obj)
            ]
            return items, self.revision

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        new: dict[str, Any],
        subresource: str | None = None,
        check_version: bool = True,
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(rtype, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise _not_found(rtype, name)
            meta = new.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
                )
            wanted = meta.get("resourceVersion")
            if check_version and wanted and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            if subresource == "status":
                merged = copy.deepcopy(old)
                merged["status"] = copy.deepcopy(new.get("status"))
            else:
                merged = copy.deepcopy(new)
                if rtype.has_status:
                    # The status subresource owns status: writes to the main resource leave it alone.
                    if "status" in old:
                        merged["status"] = copy.deepcopy(old["status"])
                    else:
                        merged.pop("status", None)
            merged["apiVersion"], merged["kind"] = rtype.api_version, rtype.kind
            keep = ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp")
            for field in keep:
                if field in old["metadata"]:
                    merged["metadata"][field] = old["metadata"][field]
            if rtype.kind in _GENERATION_KINDS and merged.get("spec") != old.get("spec"):
                merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            if merged == old:
                return copy.deepcopy(old)  # a no-op write keeps the resourceVersion, as the real server does
            self.objects[key] = merged
            self._bump(rtype, "MODIFIED", merged)
            return copy.deepcopy(merged)

    def delete(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            key = self._key(rtype, namespace, name)
            obj = self.objects.pop(key, None)
            if obj is None:
                raise _not_found(rtype, name)
            if rtype.kind == "Namespace":
                # The namespace controller empties a deleted namespace; here that happens at once.
                for other in [k for k in self.objects if k[2] == name]:
                    child = self.objects.pop(other)
                    self._bump(RESOURCE_BY_PLURAL[(other[0], other[1])], "DELETED", child)
                self.logs = {k: v for k, v in self.logs.items() if k[0] != name}
            self._bump(rtype, "DELETED", obj)
            return copy.deepcopy(obj)


RESOURCE_BY_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in RESOURCE_TYPES}


# -- HTTP --------------------------------------------------------------------------------------


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

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "request body is not JSON") from None

    def _dispatch(self, method: str) -> None:
        self.server.emulator.requests.append((method, self.path))
        try:
            self._route(method)
        except ApiError as exc:
            self._send_json(exc.code, exc.status_body())
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
        if subresource not in (None, "status", "log"):
            raise ApiError(404, "NotFound", f"subresource {subresource} is not supported by the emulator")
        if subresource == "log" and rtype.kind != "Pod":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        state = self.server.emulator.state

        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return self._watch(rtype, namespace, query)
                items, revision = state.list(rtype, namespace, query.get("labelSelector"), query.get("fieldSelector"))
                return self._send_json(
                    200,
                    {
                        "kind": f"{rtype.kind}List",
                        "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(revision)},
                        "items": items,
                    },
                )
            if method == "POST":
                if rtype.namespaced and namespace is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                body = self._body()
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "request body must be an object")
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
            return self._send_json(200, state.update(rtype, namespace, name, body, subresource))
        if method == "PATCH":
            return self._patch(rtype, namespace, name, subresource)
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

    def _patch(self, rtype: ResourceType, namespace: str | None, name: str, subresource: str | None) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = self._body()
        state = self.server.emulator.state
        with state.lock:  # read-modify-write in one step; the lock is re-entrant
            current = state.get(rtype, namespace, name)
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
            # A resourceVersion in the patch is a precondition; otherwise the patch applies to the current object.
            updated = state.update(rtype, namespace, name, new, subresource)
        return self._send_json(200, updated)

    def _watch(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        state = self.server.emulator.state
        label_selector, field_selector = query.get("labelSelector"), query.get("fieldSelector")
        timeout = float(query.get("timeoutSeconds") or self.server.emulator.max_watch_seconds)
        timeout = min(timeout, self.server.emulator.max_watch_seconds)
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(event_type: str, obj: dict[str, Any]) -> None:
            line = (json.dumps({"type": event_type, "object": obj}) + "\n").encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        def matches(event: WatchEvent) -> bool:
            obj = event.obj
            return (
                event.rtype == rtype
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and label_selector_matches(label_selector, obj["metadata"].get("labels") or {})
                and field_selector_matches(field_selector, obj)
            )

        with state.lock:
            since = query.get("resourceVersion")
            if since in (None, "", "0"):
                # No version: the current state as ADDED events, then changes.
                initial, _ = state.list(rtype, namespace, label_selector, field_selector)
                cursor = len(state.events)
            else:
                initial = []
                cursor = next((i for i, e in enumerate(state.events) if e.revision > int(since)), len(state.events))
        try:
            for obj in initial:
                emit("ADDED", obj)
            while not self.server.emulator.stopping.is_set():
                with state.lock:
                    while cursor >= len(state.events):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self.server.emulator.stopping.is_set():
                            break
                        state.lock.wait(min(remaining, 0.5))
                    pending = state.events[cursor:]
                    cursor = len(state.events)
                for event in pending:
                    if matches(event):
                        emit(event.type, event.obj)
                if time.monotonic() >= deadline:
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _group_list() -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for r in RESOURCE_TYPES:
        if r.group:
            groups.setdefault(r.group, [])
            if r.version not in groups[r.group]:
                groups[r.group].append(r.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name) for name in sorted(groups)],
    }


def _group(name: str) -> dict[str, Any]:
    versions = sorted({r.version for r in RESOURCE_TYPES if r.group == name})
    if not versions:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources = []
    for r in RESOURCE_TYPES:
        if r.group != group or r.version != version:
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        if r.has_status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if r.kind == "Pod":
            resources.append(
                {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
    if not resources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: KubeEmulator


class KubeEmulator:
    """The emulator, in a background thread of the test process. ``url`` is the API server address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_watch_seconds: float = 30.0) -> None:
        self.state = KubeState()
        self.max_watch_seconds = max_watch_seconds
        self.stopping = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self._server = _Server((host, port), _Handler)
        self._server.emulator = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> KubeEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.state.lock:
            self.state.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        self.state.reset()
        self.requests.clear()

    # -- test hooks ----------------------------------------------------------------------------
    def seed(self, plural: str, obj: dict[str, Any], group: str = "", namespace: str | None = None) -> dict[str, Any]:
        rtype = RESOURCE_BY_PLURAL[(group, plural)]
        status = obj.get("status")
        created = self.state.create(rtype, namespace, obj)
        if status is not None and rtype.has_status:
            created = self.state.update(
                rtype, namespace, created["metadata"]["name"], {**created, "status": status}, "status"
            )
        return created

    def get(self, plural: str, name: str, group: str = "", namespace: str | None = None) -> dict[str, Any]:
        return self.state.get(RESOURCE_BY_PLURAL[(group, plural)], namespace, name)

    def list_objects(
        self, plural: str, group: str = "", namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.state.list(RESOURCE_BY_PLURAL[(group, plural)], namespace, label_selector, None)[0]

    def set_status(
        self, plural: str, name: str, status: dict[str, Any], group: str = "", namespace: str | None = None
    ) -> dict[str, Any]:
        """What a controller would do: set an object's status (an MPIJob's conditions, a pod's phase)."""
        rtype = RESOURCE_BY_PLURAL[(group, plural)]
        current = self.state.get(rtype, namespace, name)
        return self.state.update(rtype, namespace, name, {**current, "status": status}, "status", check_version=False)

    def set_mpijob_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.set_status("mpijobs", name, status, group="kubeflow.org", namespace=namespace)

    def set_pod_log(self, namespace: str, name: str, text: str, container: str | None = None) -> None:
        with self.state.lock:
            self.state.logs[(namespace, name, container)] = text

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        with self.state.lock:
            return self.state.logs.get((namespace, name, container), self.state.logs.get((namespace, name, None), ""))

    def add_nodes(self, nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.seed("nodes", node) for node in nodes]


# -- nodes for a nodegroup ---------------------------------------------------------------------

# GFD's nvidia.com/gpu.product is the NVML device name with spaces as dashes.
_GFD_PRODUCT = {
    "T4": "Tesla-T4",
    "A10G": "NVIDIA-A10G",
    "L4": "NVIDIA-L4",
    "L40S": "NVIDIA-L40S",
    "A100": "NVIDIA-A100-SXM4-40GB",
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
}


def node_objects(
    cluster: str,
    nodegroup: str,
    instance_type: str,
    count: int,
    zones: list[str],
    region: str,
    facts: Any,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    capacity_type: str = "ON_DEMAND",
    start_index: int = 0,
) -> list[dict[str, Any]]:
    """Node objects as EKS + the NVIDIA device plugin + GFD would register them.

    ``facts`` is a ``drivers.eks.InstanceTypeFacts``; zones are used round robin; taints are in
    Kubernetes spelling. Network-node-layer labels put each 4 nodes under one layer-3 switch.
    """
    from drivers.eks.network import max_pods

    nodes = []
    for i in range(start_index, start_index + count):
        zone = zones[i % len(zones)] if zones else f"{region}a"
        name = f"ip-10-{abs(hash((cluster, nodegroup))) % 250}-{i // 250}-{i % 250 + 1}.{region}.compute.internal"
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance_type,
            "topology.kubernetes.io/region": region,
            "topology.kubernetes.io/zone": zone,
            "eks.amazonaws.com/nodegroup": nodegroup,
            "eks.amazonaws.com/capacityType": capacity_type,
            "topology.k8s.aws/network-node-layer-1": f"nn-{cluster[:4]}l1",
            "topology.k8s.aws/network-node-layer-2": f"nn-{nodegroup[:4]}l2",
            "topology.k8s.aws/network-node-layer-3": f"nn-{nodegroup[:4]}l3-{i // 4}",
            **(labels or {}),
        }
        capacity = {
            "cpu": str(facts.vcpus or 1),
            "memory": f"{(facts.memory_mib or 1024) * 1024}Ki",
            "pods": str(max_pods(facts.max_enis, facts.ipv4_per_eni)),
            "ephemeral-storage": "104845292Ki",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        }
        if facts.gpu_count:
            capacity["nvidia.com/gpu"] = str(facts.gpu_count)
            node_labels.update(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": _GFD_PRODUCT.get(facts.gpu_model or "", f"NVIDIA-{facts.gpu_model}"),
                    "nvidia.com/gpu.count": str(facts.gpu_count),
                    "nvidia.com/gpu.memory": str(facts.gpu_memory_mib or 0),
                }
            )
        if facts.efa_supported and facts.max_efa_interfaces:
            capacity["vpc.amazonaws.com/efa"] = str(facts.max_efa_interfaces)
        instance_id = f"i-{uuid.uuid4().hex[:17]}"
        nodes.append(
            {
                "metadata": {"name": name, "labels": node_labels},
                "spec": {"providerID": f"aws:///{zone}/{instance_id}", "taints": list(taints or [])},
                "status": {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250 + 1}"},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": {
                        "machineID": uuid.uuid4().hex,
                        "systemUUID": str(uuid.uuid4()),
                        "bootID": str(uuid.uuid4()),
                        "kernelVersion": "6.1.119-129.201.amzn2023.x86_64",
                        "osImage": "Amazon Linux 2023.6.20241212",
                        "containerRuntimeVersion": "containerd://1.7.23",
                        "kubeletVersion": "v1.32.0-eks-aeac579",
                        "kubeProxyVersion": "v1.32.0-eks-aeac579",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                },
            }
        )
    return nodes


def materialize_nodegroup(
    emulator: KubeEmulator, nodegroups: Any, cluster: str, nodegroup: str, region: str
) -> list[dict[str, Any]]:
    """Register nodes for a moto nodegroup's desired size (``nodegroups`` is a ``drivers.eks.EksNodegroups``).

    Existing nodes of the nodegroup are kept; only the difference to the desired size is added or
    removed, so a test can scale in moto and call this again.
    """
    info, facts = nodegroups.nodegroup_facts(cluster, nodegroup)
    instance_type = info.instance_types[0]
    existing = emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
    wanted = info.scaling.desired
    if len(existing) > wanted:
        for node in sorted(existing, key=lambda n: n["metadata"]["name"])[wanted:]:
            emulator.state.delete(RESOURCE_BY_PLURAL[("", "nodes")], None, node["metadata"]["name"])
        return emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
    zones = []
    if nodegroups.ec2 is not None and info.subnets:
        subnets = nodegroups.ec2.describe_subnets(SubnetIds=info.subnets)["Subnets"]
        zones = sorted({s["AvailabilityZone"] for s in subnets})
    emulator.add_nodes(
        node_objects(
            cluster,
            nodegroup,
            instance_type,
            wanted - len(existing),
            zones,
            region,
            facts[instance_type],
            labels=info.labels,
            taints=[t.to_kube() for t in info.taints],
            capacity_type=info.capacity_type or "ON_DEMAND",
            start_index=len(existing),
        )
    )
    return emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
