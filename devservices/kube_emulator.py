"""A stateful Kubernetes API emulator over HTTP for the official ``kubernetes`` client.

No kube-apiserver can be installed on the test machines, so this speaks enough of the API for
the code under test: discovery, CRUD with PUT/PATCH (merge, strategic-as-merge, JSON patch), label
and field selectors, metadata (uid, resourceVersion, creationTimestamp, generation), Status bodies
for errors, and pod logs. Fidelity limits are listed in docs/testing.md, section "Kubernetes API
emulator".

Lists and watches follow kube-apiserver's etcd-backed storage:

- One global resourceVersion, bumped by every create, update, patch and delete (never by a no-op
  write), is each changed object's ``metadata.resourceVersion`` and a list's.
- ``limit``/``continue``: pages in etcd key order (``<namespace>/<name>``); every page of one list
  comes from the snapshot at the first page's version (objects changed since appear as they were,
  created ones do not appear). The token is the real format (base64url JSON ``{v, rv, start}``). Like
  etcd, a full page is followed by a token whenever more keys exist, even if none matches the
  selectors (so a last page may be empty); ``remainingItemCount`` only without selectors. A malformed
  token is 400 BadRequest; a token whose version was compacted away is 410 Gone, reason ``Expired``,
  with a token for the inconsistent remainder in the Status's ``metadata.continue`` (``rv: -1``).
- Watch (``watch=true``): ADDED/MODIFIED/DELETED events newer than ``resourceVersion`` (none or "0":
  the current objects as ADDED first), until ``timeoutSeconds``. Selectors filter as the watch cache
  does: an object that starts matching arrives as ADDED, one that stops matching as DELETED (its last
  matching state). ``allowWatchBookmarks=true`` adds one BOOKMARK with the newest version just before
  a timed-out stream ends. A version older than the retained history answers 200 and a single ERROR
  event with a 410 ``Expired`` Status ("too old resource version"), as the real server does. A watch
  response closes its connection (``Connection: close``); the real server keeps it.
- The history is bounded (``history_limit`` events, default 10,000, settable per test); older
  versions count as compacted. ``compact()`` forgets it all at once, like an etcd compaction.
- ``requests`` logs every request; ``count_requests()`` counts lists, pages or watches.
- ServiceAccount tokens (TokenRequest) and namespaced RBAC (Roles, RoleBindings) for requests bearing such a token;
  every other request is the cluster admin (devservices/kube_rbac.py).

Built on the standard library (``ThreadingHTTPServer``) rather than kmock: kmock 0.8 lacked PUT,
selectors, metadata, watch timeouts and text logs, and closing those gaps was most of the work.
"""

from __future__ import annotations

import base64
import binascii
import bisect
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

import yaml

from devservices.kube_apply import ApplyConflict, manager_from_user_agent, record_update, server_side_apply
from devservices.kube_rbac import RBAC_GROUP, Forbidden, ServiceAccountTokens, Unauthorized, verb_of

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
    ResourceType("", "v1", "limitranges", "LimitRange", True, has_status=False, short_names=("limits",)),
    ResourceType("", "v1", "events", "Event", True, has_status=False, short_names=("ev",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, short_names=("ds",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, short_names=("deploy",)),
    ResourceType("kubeflow.org", "v2beta1", "mpijobs", "MPIJob", True),
    ResourceType(RBAC_GROUP, "v1", "roles", "Role", True, has_status=False),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", True, has_status=False),
    # Karpenter's CRDs: stored as given (no schema validation here; tests validate against their fixture).
    ResourceType("karpenter.sh", "v1", "nodepools", "NodePool", False),
    ResourceType("karpenter.k8s.aws", "v1", "ec2nodeclasses", "EC2NodeClass", False, short_names=("ec2nc",)),
)

# DELETE answers with the deleted object for these kinds (the client deserializes it so), else a Status.
_DELETE_RETURNS_OBJECT = {"Pod", "Service", "ServiceAccount", "ResourceQuota", "LimitRange", "Namespace", "MPIJob"}

# Objects in these groups get metadata.generation bumped on spec changes, as the real server does.
_GENERATION_KINDS = {"Deployment", "DaemonSet", "MPIJob", "NodePool", "EC2NodeClass"}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.metadata: dict[str, Any] = {}  # ListMeta of the Status (an expired list's continue token)

    def status_body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata),
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

Key = tuple[str, str, str | None, str]  # (group, plural, namespace or None, name)
Snapshot = list[tuple[str, dict[str, Any]]]  # (sort key, object) of one type at one revision, sorted

DEFAULT_HISTORY_LIMIT = 10_000  # watch events kept; older resource versions are "compacted" (410 Gone)
_SNAPSHOTS_KEPT = 8  # paginated lists in progress whose snapshot is cached (a miss rebuilds it from history)
_CONTINUE_VERSION = "meta.k8s.io/v1"
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list."
)


@dataclass
class WatchEvent:
    revision: int
    rtype: ResourceType
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # the object after the change (for DELETED: the last state, with the deletion's version)
    key: Key
    prev: dict[str, Any] | None = None  # the object before the change (None for ADDED)


def encode_continue(start: str, revision: int) -> str:
    """A continue token as kube-apiserver makes one: base64url(JSON {v, rv, start}), start = the next key."""
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(doc, dict) or doc.get("v") != _CONTINUE_VERSION:
            raise ValueError(
                f"continue key is not valid: incorrect encoded start resourceVersion (version {_CONTINUE_VERSION})"
            )
        start, revision = doc.get("start"), doc.get("rv")
        if not isinstance(start, str) or not isinstance(revision, int) or ".." in start.split("/"):
            raise ValueError("continue key is not valid")
    except (ValueError, binascii.Error) as exc:
        raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from None
    return start, revision


def _sort_key(key: Key) -> str:
    """The order of etcd keys under a resource's prefix: ``<namespace>/<name>``, or ``<name>`` when cluster-scoped."""
    return key[3] if key[2] is None else f"{key[2]}/{key[3]}"


def _int_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid {name} "{value}": must be an integer') from None


class KubeState:
    """All objects, one global resourceVersion counter, and a bounded event log watchers follow.

    Stored objects are never changed in place: every write stores a new dict. Events, list snapshots and
    list pages hold references to them, so nothing may mutate an object it did not just build.
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.lock = threading.Condition()
        self.history_limit = history_limit
        self.event_base = 0  # sequence number of events[0]; never reset, so watch cursors stay valid
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.revision = 1
            self.compacted_revision = 0  # events up to this revision may be gone: older versions are 410 Gone
            self.objects: dict[Key, dict[str, Any]] = {}
            self.event_base += len(getattr(self, "events", []))
            self.events: list[WatchEvent] = []
            self.snapshots: dict[tuple[str, str, str | None, int], Snapshot] = {}
            self.logs: dict[tuple[str, str, str | None], str] = {}
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self._create(RESOURCE_BY_PLURAL[("", "namespaces")], None, {"metadata": {"name": ns}})
            self.lock.notify_all()

    @staticmethod
    def _key(rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.group, rtype.plural, namespace if rtype.namespaced else None, name)

    def _bump(
        self, rtype: ResourceType, event_type: str, obj: dict[str, Any], key: Key, prev: dict[str, Any] | None = None
    ) -> None:
        """Give ``obj`` (a fresh dict the caller owns) the next resourceVersion and log the event."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.events.append(WatchEvent(self.revision, rtype, event_type, obj, key, prev))
        self._trim()
        self.lock.notify_all()

    def _trim(self) -> None:
        # Trim in chunks (at least history_limit events stay, at most 1/8 more) so a long history is not
        # shifted on every write; small limits (tests) trim exactly.
        excess = len(self.events) - self.history_limit
        if excess > self.history_limit // 8:
            self.compacted_revision = self.events[excess - 1].revision
            del self.events[:excess]
            self.event_base += excess
            for cached in [k for k in self.snapshots if k[3] < self.compacted_revision]:
                del self.snapshots[cached]

    def compact(self) -> int:
        """Forget the whole event history now, as an etcd compaction does; returns the compacted revision."""
        with self.lock:
            self.event_base += len(self.events)
            self.events.clear()
            self.snapshots.clear()
            self.compacted_revision = self.revision
            self.lock.notify_all()
            return self.revision

    def next_seq(self) -> int:
        """The sequence number the next event will get (a watch cursor)."""
        return self.event_base + len(self.events)

    def seq_after(self, revision: int) -> int:
        """The sequence number of the first retained event newer than ``revision``."""
        index = bisect.bisect_right(self.events, revision, key=lambda e: e.revision)
        return self.event_base + index

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
        self._bump(rtype, "ADDED", obj, key)
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
                for (group, plural, ns, _), obj in sorted(self.objects.items(), key=lambda kv: _sort_key(kv[0]))
                if group == rtype.group
                and plural == rtype.plural
                and (namespace is None or ns == namespace)
                and label_selector_matches(label_selector, obj["metadata"].get("labels") or {})
                and field_selector_matches(field_selector, obj)
            ]
            return items, self.revision

    def list_page(
        self,
        rtype: ResourceType,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        limit: int | None = None,
        token: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """A list response as kube-apiserver's etcd store makes it, ``limit``/``continue`` included.

        Every page of one paginated list comes from the snapshot at the first page's resourceVersion
        (consistent, like etcd MVCC reads); a token whose version is older than the retained history is
        410 Expired, with a token for the inconsistent remainder in the Status's metadata.
        """
        with self.lock:
            start, revision = "", self.revision
            if token:
                if resource_version not in (None, "", "0"):
                    raise ApiError(400, "BadRequest", "specifying resource version is not allowed when using continue")
                start, revision = decode_continue(token)
                if revision == -1:  # the remainder after an expired token: from the latest state
                    revision = self.revision
                elif revision <= 0:
                    raise ApiError(400, "BadRequest", "0 continue resource version is not allowed when using continue")
                elif revision > self.revision:
                    raise ApiError(
                        400, "BadRequest", f"invalid continue token: resource version {revision} is in the future"
                    )
                elif revision < self.compacted_revision:
                    expired = ApiError(410, "Expired", _CONTINUE_EXPIRED)
                    expired.metadata = {"continue": encode_continue(start, -1)}
                    raise expired
            snapshot = self._snapshot(rtype, namespace, revision)
            index = bisect.bisect_left(snapshot, start, key=lambda entry: entry[0])
            items: list[dict[str, Any]] = []
            more, remaining = False, 0
            for position in range(index, len(snapshot)):
                sort_key, obj = snapshot[position]
                if not (
                    label_selector_matches(label_selector, obj["metadata"].get("labels") or {})
                    and field_selector_matches(field_selector, obj)
                ):
                    continue
                items.append(obj)
                if limit and len(items) >= limit:
                    # Like etcd: more keys after this one means a continue token, even if none of them matches.
                    more = position + 1 < len(snapshot)
                    remaining = len(snapshot) - position - 1
                    start = sort_key + "\x00"
                    break
            metadata: dict[str, Any] = {"resourceVersion": str(revision)}
            if more:
                self._keep_snapshot((rtype.group, rtype.plural, namespace, revision), snapshot)
                metadata["continue"] = encode_continue(start, revision)
                if not label_selector and not field_selector:
                    metadata["remainingItemCount"] = remaining
            return {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": metadata,
                "items": items,  # stored objects, shared: serialize, never mutate
            }

    def _snapshot(self, rtype: ResourceType, namespace: str | None, revision: int) -> Snapshot:
        """The objects of a type at ``revision``, sorted by key: the current ones with newer events undone."""
        cache_key = (rtype.group, rtype.plural, namespace, revision)
        cached = self.snapshots.get(cache_key)
        if cached is not None:
            return cached
        objects = {
            key: obj
            for key, obj in self.objects.items()
            if key[0] == rtype.group and key[1] == rtype.plural and (namespace is None or key[2] == namespace)
        }
        for event in reversed(self.events):
            if event.revision <= revision:
                break
            if event.rtype != rtype or (namespace is not None and event.key[2] != namespace):
                continue
            if event.type == "ADDED":
                objects.pop(event.key, None)
            elif event.prev is not None:
                objects[event.key] = event.prev
        return sorted(((_sort_key(key), obj) for key, obj in objects.items()), key=lambda entry: entry[0])

    def _keep_snapshot(self, cache_key: tuple[str, str, str | None, int], snapshot: Snapshot) -> None:
        """Cache the snapshot of a list with more pages to come (a miss only costs a rebuild from history)."""
        self.snapshots.pop(cache_key, None)
        self.snapshots[cache_key] = snapshot
        while len(self.snapshots) > _SNAPSHOTS_KEPT:
            del self.snapshots[next(iter(self.snapshots))]

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
            self._bump(rtype, "MODIFIED", merged, key, old)
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
                    self._bump(RESOURCE_BY_PLURAL[(other[0], other[1])], "DELETED", _tombstone(child), other, child)
                self.logs = {k: v for k, v in self.logs.items() if k[0] != name}
            gone = _tombstone(obj)
            self._bump(rtype, "DELETED", gone, key, obj)
            return copy.deepcopy(gone)


def _tombstone(obj: dict[str, Any]) -> dict[str, Any]:
    """A deleted object's last state as a new dict (its metadata gets the deletion's resourceVersion)."""
    return {**obj, "metadata": dict(obj["metadata"])}


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
        if r.kind == "ServiceAccount":
            resources.append(
                {
                    "name": "serviceaccounts/token",
                    "singularName": "",
                    "namespaced": True,
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                    "verbs": ["create"],
                }
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

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_watch_seconds: float = 30.0,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        self.state = KubeState(history_limit)
        self.default_history_limit = history_limit
        self.max_watch_seconds = max_watch_seconds
        self.stopping = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self.tokens = ServiceAccountTokens()  # TokenRequest tokens and their RBAC (devservices/kube_rbac.py)
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
        """Empty store (the four default namespaces), the default history limit, an empty request log."""
        with self.state.lock:
            self.state.history_limit = self.default_history_limit
            self.state.reset()
        self.requests.clear()
        self.tokens = ServiceAccountTokens()

    # -- test hooks ----------------------------------------------------------------------------
    @property
    def history_limit(self) -> int:
        """How many watch events are kept (at least; up to 1/8 more). Older versions answer 410 Gone."""
        return self.state.history_limit

    @history_limit.setter
    def history_limit(self, limit: int) -> None:
        with self.state.lock:
            self.state.history_limit = max(1, limit)
            self.state._trim()

    def compact(self) -> int:
        """Forget the event history now (an etcd compaction): every older resourceVersion and continue token
        is 410 Gone. Returns the compacted revision."""
        return self.state.compact()

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        with self.state.lock:
            return self.state.revision

    def count_requests(self, method: str = "GET", path: str | None = None, *, watch: bool | None = None) -> int:
        """Requests received with this method (and exact path, e.g. ``/api/v1/nodes``); ``watch`` True counts
        only watches, False only the others (a paginated list counts one request per page)."""
        count = 0
        for logged_method, target in list(self.requests):
            parts = urlsplit(target)
            if logged_method != method or (path is not None and parts.path != path):
                continue
            is_watch = parse_qs(parts.query).get("watch", [""])[-1] in ("true", "1")
            if watch is None or watch == is_watch:
                count += 1
        return count

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

    def label_history(self, node: str, key: str) -> list[str | None]:
        """The values a node's label took, in order, from the retained event history (None: absent); a
        write that left the label as it was adds nothing. Shows transitions a poll could miss (pending)."""
        values: list[str | None] = []
        with self.state.lock:
            events = [e for e in self.state.events if e.rtype.kind == "Node" and e.key[3] == node]
        for event in events:
            value = None if event.type == "DELETED" else (event.obj["metadata"].get("labels") or {}).get(key)
            if not values or values[-1] != value:
                values.append(value)
        return values


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
    network_labels: bool = True,
) -> list[dict[str, Any]]:
    """Node objects as EKS + the NVIDIA device plugin + GFD would register them.

    ``network_labels=False`` leaves out the network-node-layer labels (the controller then reads them from EC2's
    instance topology).

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
        if not network_labels:
            for layer in (1, 2, 3):
                node_labels.pop(f"topology.k8s.aws/network-node-layer-{layer}", None)
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
    emulator: KubeEmulator,
    nodegroups: Any,
    cluster: str,
    nodegroup: str,
    region: str,
    *,
    network_labels: bool = True,
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
            network_labels=network_labels,
        )
    )
    return emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
