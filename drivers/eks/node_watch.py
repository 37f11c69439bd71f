"""Following a cluster's GPU nodes: one paginated list, then a watch from the list's resourceVersion (relisting on
410 Gone, or every poll where the credentials may not watch)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from drivers.eks.errors import KubeError
from drivers.eks.kube import KubeGpuCluster, node_selector, status_message
from drivers.eks.kube_labels import DEFAULT_PAGE_SIZE
from drivers.eks.kube_models import KubeGpuHost, host_from_node, is_gpu_host

log = logging.getLogger("gpufabric.eks.kube")


@dataclass(frozen=True)
class NodeChanges:
    """What one :meth:`GpuNodeWatch.poll` saw: every current host and the names that changed since the last
    poll (a node added then deleted in between is in neither list; a change that leaves the
    :class:`KubeGpuHost` equal, such as a heartbeat in the node status, is not ``modified``)."""

    hosts: list[KubeGpuHost]  # sorted by name
    added: list[str]
    modified: list[str]
    deleted: list[str]
    relisted: bool  # this poll listed all nodes (the first poll, after 410 Gone, or without watch permission)
    resource_version: str

    @property
    def changed(self) -> list[str]:
        return sorted({*self.added, *self.modified, *self.deleted})


class _WatchExpired(Exception):
    pass


class _WatchForbidden(Exception):
    pass


class GpuNodeWatch:
    """A cluster's GPU nodes kept current by one paginated list and then a watch from the list's version.

    The owner keeps the object and calls :meth:`poll` on each tick with a connected cluster (the client is
    not kept: a rotating token is re-read per connection). The first poll lists the nodes (pages of
    ``page_size``) and remembers the list's resourceVersion; every later poll follows the watch from the
    newest version seen (bookmarks included) for ``watch_timeout_s`` seconds and applies ADDED / MODIFIED /
    DELETED to its map of hosts by node name. When the server no longer has that version (410 Gone: the
    poll came later than its watch-cache / etcd history window), it lists again and reports the difference.
    Without RBAC ``watch`` on nodes (403) it lists on every poll instead, logging that once.

    A failed poll keeps the versions and changes applied so far; the next poll goes on from there and
    reports them.
    """

    def __init__(
        self,
        nodegroup: str | None = None,
        label_selector: str | None = None,
        include_non_gpu: bool = False,
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout_s: int = 1,
    ) -> None:
        self.label_selector = node_selector(nodegroup, label_selector)
        self.include_non_gpu = include_non_gpu
        self.page_size = page_size
        self.watch_timeout_s = max(1, int(watch_timeout_s))  # timeoutSeconds is whole seconds
        self.lists = 0  # full (paginated) lists done
        self.watches = 0  # watch requests done
        self._lock = threading.Lock()
        self._hosts: dict[str, KubeGpuHost] = {}
        self._version: str | None = None
        self._before: dict[str, KubeGpuHost | None] = {}  # state at the last report of each name touched since
        self._relisted = False
        self._warned_forbidden = False

    @property
    def resource_version(self) -> str | None:
        """The newest resourceVersion applied (None before the first list)."""
        return self._version

    def hosts(self) -> list[KubeGpuHost]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda h: h.name)

    def reset(self) -> None:
        """Forget the version: the next poll lists again (and reports the difference to what it had)."""
        with self._lock:
            self._version = None

    def poll(self, cluster: KubeGpuCluster) -> NodeChanges:
        with self._lock:
            if self._version is None:
                self._relist(cluster)
            else:
                try:
                    self._follow(cluster)
                except _WatchExpired:
                    log.info("node watch from resourceVersion %s expired (410 Gone): listing again", self._version)
                    self._relist(cluster)
                except _WatchForbidden:
                    if not self._warned_forbidden:
                        log.warning("no RBAC 'watch' on nodes (403): listing all nodes on every poll instead")
                        self._warned_forbidden = True
                    self._relist(cluster)
            return self._report()

    # internals (under the lock)
    def _keep(self, host: KubeGpuHost) -> bool:
        return self.include_non_gpu or is_gpu_host(host)

    def _set(self, name: str, host: KubeGpuHost | None) -> None:
        if name not in self._before:
            self._before[name] = self._hosts.get(name)
        if host is None:
            self._hosts.pop(name, None)
        else:
            self._hosts[name] = host

    def _relist(self, cluster: KubeGpuCluster) -> None:
        nodes, version = cluster.list_nodes(self.label_selector, self.page_size)
        self.lists += 1
        fresh = {h.name: h for h in map(host_from_node, nodes) if self._keep(h)}
        for name in self._hosts.keys() | fresh.keys():
            self._set(name, fresh.get(name))
        self._version = version or None
        self._relisted = True

    def _follow(self, cluster: KubeGpuCluster) -> None:
        self.watches += 1
        stream = k8s_watch.Watch().stream(
            cluster.core.list_node,
            label_selector=self.label_selector,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            # The server ends the stream after timeout_seconds; the read timeout only guards a dead connection.
            _request_timeout=(10, self.watch_timeout_s + 10),
        )
        try:
            for event in stream:
                self._apply(event)
        except ApiException as exc:
            if exc.status == 410:
                raise _WatchExpired() from None
            if exc.status == 403:
                raise _WatchForbidden() from None
            raise KubeError(
                f"watch nodes: {exc.status} {exc.reason}: {status_message(exc)}", exc.status or 0, exc.reason
            ) from None
        except urllib3.exceptions.ReadTimeoutError:
            return  # the server kept the stream open past timeout_seconds: nothing more this time
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(f"watch nodes: cannot reach the API server: {exc}") from None

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        raw = event.get("raw_object")
        version = ((raw or {}).get("metadata") or {}).get("resourceVersion") if isinstance(raw, dict) else None
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            node = event["object"]
            name = str(node.metadata.name)
            host = host_from_node(node) if kind != "DELETED" else None
            self._set(name, host if host is not None and self._keep(host) else None)
        if version:  # BOOKMARK carries only this: every change up to it has been sent
            self._version = str(version)

    def _report(self) -> NodeChanges:
        added, modified, deleted = [], [], []
        for name, before in self._before.items():
            now = self._hosts.get(name)
            if before is None and now is not None:
                added.append(name)
            elif before is not None and now is None:
                deleted.append(name)
            elif before is not None and now is not None and before != now:
                modified.append(name)
        changes = NodeChanges(
            hosts=sorted(self._hosts.values(), key=lambda h: h.name),
            added=sorted(added),
            modified=sorted(modified),
            deleted=sorted(deleted),
            relisted=self._relisted,
            resource_version=self._version or "",
        )
        self._before = {}
        self._relisted = False
        return changes
