"""The store: objects, one global resourceVersion, the bounded event history watches follow, list snapshots.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import bisect
import copy
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from devservices.kube_emulator.continue_tokens import _CONTINUE_EXPIRED, decode_continue, encode_continue
from devservices.kube_emulator.resources import RESOURCE_BY_PLURAL, ApiError, ResourceType, _not_found, _now
from devservices.kube_emulator.selectors import field_selector_matches, label_selector_matches

Key = tuple[str, str, str | None, str]  # (group, plural, namespace or None, name)
Snapshot = list[tuple[str, dict[str, Any]]]  # (sort key, object) of one type at one revision, sorted

DEFAULT_HISTORY_LIMIT = 10_000  # watch events kept; older resource versions are "compacted" (410 Gone)
_SNAPSHOTS_KEPT = 8  # paginated lists in progress whose snapshot is cached (a miss rebuilds it from history)

# Objects in these groups get metadata.generation bumped on spec changes, as the real server does.
_GENERATION_KINDS = {"Deployment", "DaemonSet", "MPIJob", "NodePool", "EC2NodeClass"}


@dataclass
class WatchEvent:
    revision: int
    rtype: ResourceType
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # the object after the change (for DELETED: the last state, with the deletion's version)
    key: Key
    prev: dict[str, Any] | None = None  # the object before the change (None for ADDED)


def _sort_key(key: Key) -> str:
    """The order of etcd keys under a resource's prefix: ``<namespace>/<name>``, or ``<name>`` when cluster-scoped."""
    return key[3] if key[2] is None else f"{key[2]}/{key[3]}"


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
