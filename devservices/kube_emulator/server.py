"""``KubeEmulator``: the HTTP server in a background thread, and the hooks tests drive it with.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devservices.kube_emulator.handler import _Handler
from devservices.kube_emulator.resources import RESOURCE_BY_PLURAL
from devservices.kube_emulator.state import DEFAULT_HISTORY_LIMIT, KubeState
from devservices.kube_rbac import ServiceAccountTokens


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
