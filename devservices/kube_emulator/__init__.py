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

The package, by module: ``resources`` (the served types, ``ApiError``), ``selectors``, ``patch`` (merge and JSON
patch), ``continue_tokens``, ``state`` (``KubeState``: objects, versions, history, snapshots), ``handler`` (HTTP
routing, writes, watches), ``discovery``, ``server`` (``KubeEmulator``) and ``nodes`` (``node_objects``,
``materialize_nodegroup``). Every name is re-exported here: import from ``devservices.kube_emulator``.
"""

from __future__ import annotations

from devservices.kube_emulator.continue_tokens import (
    _CONTINUE_EXPIRED,
    _CONTINUE_VERSION,
    decode_continue,
    encode_continue,
)
from devservices.kube_emulator.discovery import (
    KUBE_VERSION,
    _group,
    _group_list,
    _resource_list,
)
from devservices.kube_emulator.handler import (
    _DELETE_RETURNS_OBJECT,
    _Handler,
    _int_param,
)
from devservices.kube_emulator.nodes import (
    _GFD_PRODUCT,
    materialize_nodegroup,
    node_objects,
)
from devservices.kube_emulator.patch import (
    _parent,
    _pointer,
    json_patch,
    merge_patch,
)
from devservices.kube_emulator.resources import (
    RESOURCE_BY_PLURAL,
    RESOURCE_TYPES,
    ApiError,
    ResourceType,
    _not_found,
    _now,
)
from devservices.kube_emulator.selectors import (
    _SET_REQ,
    _field,
    _split_selector,
    field_selector_matches,
    label_selector_matches,
)
from devservices.kube_emulator.server import (
    KubeEmulator,
    _Server,
)
from devservices.kube_emulator.state import (
    _GENERATION_KINDS,
    _SNAPSHOTS_KEPT,
    DEFAULT_HISTORY_LIMIT,
    Key,
    KubeState,
    Snapshot,
    WatchEvent,
    _sort_key,
    _tombstone,
)

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "KUBE_VERSION",
    "RESOURCE_BY_PLURAL",
    "RESOURCE_TYPES",
    "_CONTINUE_EXPIRED",
    "_CONTINUE_VERSION",
    "_DELETE_RETURNS_OBJECT",
    "_GENERATION_KINDS",
    "_GFD_PRODUCT",
    "_SET_REQ",
    "_SNAPSHOTS_KEPT",
    "ApiError",
    "Key",
    "KubeEmulator",
    "KubeState",
    "ResourceType",
    "Snapshot",
    "WatchEvent",
    "_Handler",
    "_Server",
    "_field",
    "_group",
    "_group_list",
    "_int_param",
    "_not_found",
    "_now",
    "_parent",
    "_pointer",
    "_resource_list",
    "_sort_key",
    "_split_selector",
    "_tombstone",
    "decode_continue",
    "encode_continue",
    "field_selector_matches",
    "json_patch",
    "label_selector_matches",
    "materialize_nodegroup",
    "merge_patch",
    "node_objects",
]
