"""Kubernetes side of an EKS backend, with the official ``kubernetes`` client.

The client configuration is always built explicitly (host + token/CA, or a named kubeconfig file):
nothing here reads ``$KUBECONFIG`` or ``~/.kube/config`` on its own, so a controller never talks to
whatever cluster its shell happened to point at.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from drivers.eks.errors import KubeError
from drivers.eks.models import PLACEMENT_GROUP_LABEL, Taint

T = TypeVar("T")

log = logging.getLogger("gpufabric.eks.kube")

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
NETWORK_LAYER_LABELS = tuple(f"topology.k8s.aws/network-node-layer-{i}" for i in (1, 2, 3))
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
LEASE_LABEL = "gpufabric.io/lease"
DEFAULT_DEVICE_PLUGIN_NAMESPACE = "gpu-operator"
DEFAULT_DEVICE_PLUGIN_CONFIGMAP = "gpufabric-device-plugin-configs"
DEFAULT_PAGE_SIZE = 500  # nodes per list request (limit/continue), as client-go's pager
LIST_ATTEMPTS = 3  # a paginated list whose continue token expired (410) starts over, this many times in all


# -- configuration -----------------------------------------------------------------------------


def kube_configuration(
    host: str,
    token: str | None = None,
    ca_data: str | bytes | None = None,
    ca_file: str | Path | None = None,
    verify_ssl: bool = True,
) -> k8s.Configuration:
    """A client configuration from explicit values. ``ca_data`` is PEM (or base64 PEM as EKS returns it)."""
    configuration = k8s.Configuration(host=host.rstrip("/"), verify_ssl=verify_ssl)
    if token:
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
    if ca_file:
        configuration.ssl_ca_cert = str(ca_file)
    elif ca_data:
        raw = ca_data.encode() if isinstance(ca_data, str) else ca_data
        if b"BEGIN CERTIFICATE" not in raw:
            raw = base64.b64decode(raw)
        configuration.ca_cert_data = raw.decode()
    return configuration


def kube_configuration_from_file(path: str | Path, context: str | None = None) -> k8s.Configuration:
    """A client configuration from the named kubeconfig file (never the implicit default)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(path), context=context, client_configuration=configuration, persist_config=False
    )
    return configuration


def eks_token(session: Any, cluster: str, region: str, expires_seconds: int = 60) -> str:
    """The bearer token ``aws eks get-token`` prints: a presigned STS GetCallerIdentity URL for the cluster."""
    from botocore.signers import RequestSigner

    sts = session.client("sts", region_name=region)
    signer = RequestSigner(
        sts.meta.service_model.service_id, region, "sts", "v4", session.get_credentials(), session.events
    )
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            "body": {},
            "headers": {"x-k8s-aws-id": cluster},
            "context": {},
        },
        region_name=region,
        expires_in=expires_seconds,
        operation_name="",
    )
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


# -- models ------------------------------------------------------------------------------------


class KubeGpuHost(BaseModel):
    """A Kubernetes node seen as a GPU host."""

    name: str
    nodegroup: str | None = None
    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None
    ready: bool = False
    unschedulable: bool = False
    gpus: int = Field(default=0, description="nvidia.com/gpu capacity (time-sliced replicas included)")
    gpus_allocatable: int = 0
    mig: dict[str, int] = Field(default_factory=dict, description="MIG profile → capacity (nvidia.com/mig-<profile>)")
    efa: int = 0
    gpu_product: str | None = None
    gpu_count: int | None = Field(default=None, description="Physical GPUs per GFD (nvidia.com/gpu.count)")
    gpu_memory_mib: int | None = None
    gpu_replicas: int | None = None
    sharing_strategy: str | None = None
    device_plugin_config: str | None = None
    network_layers: list[str] = Field(default_factory=list, description="topology.k8s.aws network-node-layer 1..3")
    provider_id: str | None = Field(default=None, description="spec.providerID: aws:///<zone>/<instance id> on EKS")
    taints: list[Taint] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "") else _int(value)


def is_gpu_host(host: KubeGpuHost) -> bool:
    """Whether a node offers GPUs (whole, MIG, or per GFD's count)."""
    return bool(host.gpus or host.mig or host.gpu_count)


def host_from_node(node: Any) -> KubeGpuHost:
    """A :class:`KubeGpuHost` from a ``V1Node`` (or an object with the same attributes)."""
    meta = node.metadata
    labels = dict(meta.labels or {})
    status = node.status
    capacity = dict(status.capacity or {}) if status else {}
    allocatable = dict(status.allocatable or {}) if status else {}
    conditions = (status.conditions or []) if status else []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    spec = node.spec
    taints = [
        Taint(key=t.key, value=t.value, effect=t.effect)
        for t in ((spec.taints or []) if spec else [])
        if t.effect in ("NoSchedule", "PreferNoSchedule", "NoExecute")
    ]
    mig = {
        key[len(MIG_RESOURCE_PREFIX) :]: _int(value)
        for key, value in capacity.items()
        if key.startswith(MIG_RESOURCE_PREFIX)
    }
    return KubeGpuHost(
        name=meta.name,
        nodegroup=labels.get(NODEGROUP_LABEL),
        instance_type=labels.get(INSTANCE_TYPE_LABEL),
        zone=labels.get(ZONE_LABEL),
        region=labels.get(REGION_LABEL),
        ready=ready,
        unschedulable=bool(spec.unschedulable) if spec else False,
        gpus=_int(capacity.get(GPU_RESOURCE, 0)),
        gpus_allocatable=_int(allocatable.get(GPU_RESOURCE, 0)),
        mig=mig,
        efa=_int(capacity.get(EFA_RESOURCE, 0)),
        gpu_product=labels.get("nvidia.com/gpu.product"),
        gpu_count=_opt_int(labels.get("nvidia.com/gpu.count")),
        gpu_memory_mib=_opt_int(labels.get("nvidia.com/gpu.memory")),
        gpu_replicas=_opt_int(labels.get("nvidia.com/gpu.replicas")),
        sharing_strategy=labels.get("nvidia.com/gpu.sharing-strategy"),
        device_plugin_config=labels.get(DEVICE_PLUGIN_CONFIG_LABEL),
        network_layers=[labels[k] for k in NETWORK_LAYER_LABELS if k in labels],
        provider_id=getattr(spec, "provider_id", None) if spec else None,
        taints=taints,
        labels=labels,
    )


class SharedResource(BaseModel):
    name: str = GPU_RESOURCE
    replicas: int = Field(ge=2)
    rename: str | None = None
    devices: Literal["all"] | list[int] | list[str] | None = None

    def to_plugin(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "replicas": self.replicas}
        if self.rename:
            out["rename"] = self.rename
        if self.devices is not None:
            out["devices"] = self.devices
        return out


class DevicePluginSharing(BaseModel):
    """The NVIDIA device plugin's config file (``version: v1``) for time-slicing or MPS.

    Kept here rather than shared with the agent: ``drivers`` imports neither agent nor controller.
    """

    strategy: Literal["time-slicing", "mps"]
    resources: list[SharedResource] = Field(min_length=1)
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    mig_strategy: Literal["none", "single", "mixed"] = "none"

    def to_plugin_config(self) -> dict[str, Any]:
        body: dict[str, Any] = {"resources": [r.to_plugin() for r in self.resources]}
        if self.strategy == "time-slicing":
            body = {
                "renameByDefault": self.rename_by_default,
                "failRequestsGreaterThanOne": self.fail_requests_greater_than_one,
                **body,
            }
            sharing = {"timeSlicing": body}
        else:
            # MPS always rejects requests for more than one share; renameByDefault applies the same way.
            sharing = {"mps": {"renameByDefault": self.rename_by_default, **body}}
        return {"version": "v1", "flags": {"migStrategy": self.mig_strategy}, "sharing": sharing}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_plugin_config(), sort_keys=False)


class SharingApplied(BaseModel):
    configmap: str
    namespace: str
    config_name: str
    nodes_labelled: list[str]


class TenantAccess(BaseModel):
    namespace: str
    quota_name: str
    hard: dict[str, str]


# -- the client wrapper ------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _kube_call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as exc:
        raise KubeError(
            f"{what}: {exc.status} {exc.reason}: {_status_message(exc)}", exc.status or 0, exc.reason
        ) from None
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # MaxRetryError etc. are not OSErrors
        raise KubeError(f"{what}: cannot reach the API server: {exc}") from None


def _status_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except ValueError:
        return str(exc.body)


class KubeGpuCluster:
    """GPU nodes, device-plugin sharing config and tenant namespaces of one Kubernetes cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)

    @classmethod
    def from_configuration(cls, configuration: k8s.Configuration) -> KubeGpuCluster:
        return cls(k8s.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    # nodes
    def list_nodes(
        self, label_selector: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> tuple[list[Any], str]:
        """Every node the selector matches (``V1Node``), fetched ``page_size`` at a time with ``limit`` and
        ``continue``, and the list's resourceVersion (where a watch of these nodes starts).

        The pages are one consistent snapshot. When the continue token expires mid-list (410 Gone: the server
        compacted past the list's version) the list starts over, up to ``LIST_ATTEMPTS`` times in all.
        """
        for attempt in range(1, LIST_ATTEMPTS + 1):
            nodes: list[Any] = []
            token: str | None = None
            try:
                while True:
                    page = self._node_page(label_selector, page_size, token)
                    nodes.extend(page.items or [])
                    meta = page.metadata
                    token = (meta._continue if meta else None) or None
                    if token is None:
                        return nodes, str((meta.resource_version if meta else None) or "")
            except KubeError as exc:
                if exc.status != 410 or token is None or attempt == LIST_ATTEMPTS:
                    raise
                log.info("listing nodes: continue token expired after %d nodes, listing again", len(nodes))
        raise AssertionError("unreachable")

    def _node_page(self, label_selector: str | None, page_size: int, token: str | None) -> Any:
        return _kube_call(
            "list nodes",
            lambda: self.core.list_node(label_selector=label_selector, limit=page_size or None, _continue=token),
        )

    def list_gpu_hosts(
        self,
        nodegroup: str | None = None,
        label_selector: str | None = None,
        include_non_gpu: bool = False,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> list[KubeGpuHost]:
        """The nodes as GPU hosts, sorted by name (a paginated list; see :meth:`list_nodes`)."""
        nodes, _ = self.list_nodes(node_selector(nodegroup, label_selector), page_size)
        hosts = [host_from_node(n) for n in nodes]
        if not include_non_gpu:
            hosts = [h for h in hosts if is_gpu_host(h)]
        return sorted(hosts, key=lambda h: h.name)

    def label_nodes(self, label_selector: str, labels: dict[str, str | None]) -> list[str]:
        """Merge-patch labels onto every node the selector matches (None removes a label)."""
        nodes, _ = self.list_nodes(label_selector)
        names: list[str] = []
        body = {"metadata": {"labels": labels}}
        for node in nodes:
            name = str(node.metadata.name) if node.metadata else ""
            try:
                self.core.patch_node(name, body)
            except ApiException as exc:
                raise KubeError(f"label node {name}: {exc.status} {exc.reason}", exc.status or 0) from None
            names.append(name)
        return sorted(names)

    # device-plugin sharing
    def apply_sharing_config(
        self,
        nodegroup: str,
        config_name: str,
        sharing: DevicePluginSharing,
        namespace: str = DEFAULT_DEVICE_PLUGIN_NAMESPACE,
        configmap: str = DEFAULT_DEVICE_PLUGIN_CONFIGMAP,
    ) -> SharingApplied:
        """Put ``sharing`` under key ``config_name`` of the device plugin's ConfigMap and point the
        nodegroup's nodes at it with the ``nvidia.com/device-plugin.config`` label."""
        if not _DNS_LABEL.match(config_name.replace(".", "-")):
            raise KubeError(f"config name {config_name!r} is not a valid label value")
        self._merge_configmap_data(namespace, configmap, {config_name: sharing.to_yaml()})
        nodes = self.label_nodes(f"{NODEGROUP_LABEL}={nodegroup}", {DEVICE_PLUGIN_CONFIG_LABEL: config_name})
        return SharingApplied(configmap=configmap, namespace=namespace, config_name=config_name, nodes_labelled=nodes)

    def remove_sharing_config(
        self,
        nodegroup: str,
        config_name: str,
        namespace: str = DEFAULT_DEVICE_PLUGIN_NAMESPACE,
        configmap: str = DEFAULT_DEVICE_PLUGIN_CONFIGMAP,
    ) -> list[str]:
        """Unlabel the nodegroup's nodes, then drop the key (the plugin falls back to its default config)."""
        nodes = self.label_nodes(
            f"{NODEGROUP_LABEL}={nodegroup},{DEVICE_PLUGIN_CONFIG_LABEL}={config_name}",
            {DEVICE_PLUGIN_CONFIG_LABEL: None},
        )
        try:
            self.core.patch_namespaced_config_map(configmap, namespace, {"data": {config_name: None}})
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(
                    f"update configmap {namespace}/{configmap}: {exc.status} {exc.reason}", exc.status or 0
                ) from None
        return nodes

    def read_sharing_configs(
        self, namespace: str = DEFAULT_DEVICE_PLUGIN_NAMESPACE, configmap: str = DEFAULT_DEVICE_PLUGIN_CONFIGMAP
    ) -> dict[str, dict[str, Any]]:
        cm = _kube_call(
            f"read configmap {namespace}/{configmap}",
            lambda: self.core.read_namespaced_config_map(configmap, namespace),
        )
        return {key: yaml.safe_load(value) for key, value in (cm.data or {}).items()}

    def _merge_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        try:
            self.core.patch_namespaced_config_map(name, namespace, {"data": data})
            return
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(
                    f"update configmap {namespace}/{name}: {exc.status} {exc.reason}", exc.status or 0
                ) from None
        body = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels={MANAGED_BY_LABEL: "gpufabric"}),
            data=data,
        )
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # created by someone else between our patch and create
                _kube_call(
                    f"update configmap {namespace}/{name}",
                    lambda: self.core.patch_namespaced_config_map(name, namespace, {"data": data}),
                )
                return
            raise KubeError(
                f"create configmap {namespace}/{name}: {exc.status} {exc.reason}", exc.status or 0
            ) from None

    # tenants
    def create_tenant_namespace(
        self, namespace: str, resources: dict[str, int], lease_id: str | None = None
    ) -> TenantAccess:
        """A namespace with a ResourceQuota capping the leased extended resources (``requests.<resource>``)."""
        if not _DNS_LABEL.match(namespace):
            raise KubeError(f"namespace {namespace!r} is not a valid DNS label")
        labels = {MANAGED_BY_LABEL: "gpufabric"}
        if lease_id:
            labels[LEASE_LABEL] = lease_id
        try:
            self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace, labels=labels)))
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(f"create namespace {namespace}: {exc.status} {exc.reason}", exc.status or 0) from None
        hard = quota_hard(resources)
        quota = k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="gpufabric-lease", namespace=namespace, labels=labels),
            spec=k8s.V1ResourceQuotaSpec(hard=hard),
        )
        try:
            self.core.create_namespaced_resource_quota(namespace, quota)
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(f"create quota in {namespace}: {exc.status} {exc.reason}", exc.status or 0) from None
            _kube_call(
                f"replace quota in {namespace}",
                lambda: self.core.replace_namespaced_resource_quota("gpufabric-lease", namespace, quota),
            )
        return TenantAccess(namespace=namespace, quota_name="gpufabric-lease", hard=hard)

    def list_lease_namespaces(self) -> dict[str, str]:
        """Namespaces gpufabric made for leases: name -> lease id (from the lease label)."""
        out: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self._namespace_page(token)
            for ns in page.items:
                meta = ns.metadata
                if meta is not None and meta.name and meta.labels and meta.labels.get(LEASE_LABEL):
                    out[meta.name] = meta.labels[LEASE_LABEL]
            token = (page.metadata._continue if page.metadata else None) or None
            if not token:
                return out

    def _namespace_page(self, token: str | None) -> k8s.V1NamespaceList:
        return _kube_call(
            "list lease namespaces",
            lambda: self.core.list_namespace(label_selector=LEASE_LABEL, limit=500, _continue=token),
        )

    def delete_tenant_namespace(self, namespace: str) -> bool:
        """Delete the quota and the namespace; False when it was already gone."""
        for fn in (
            lambda: self.core.delete_namespaced_resource_quota("gpufabric-lease", namespace),
            lambda: self.core.delete_namespace(namespace),
        ):
            try:
                fn()
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise KubeError(f"delete namespace {namespace}: {exc.status} {exc.reason}", exc.status or 0) from None
        return True


def node_selector(nodegroup: str | None = None, label_selector: str | None = None) -> str | None:
    """The label selector for a nodegroup's nodes (and further requirements), None for all nodes."""
    selectors = [s for s in (label_selector, f"{NODEGROUP_LABEL}={nodegroup}" if nodegroup else None) if s]
    return ",".join(selectors) or None


# -- following the nodes: one list, then a watch -----------------------------------------------


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
                f"watch nodes: {exc.status} {exc.reason}: {_status_message(exc)}", exc.status or 0, exc.reason
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


def quota_hard(resources: dict[str, int]) -> dict[str, str]:
    """Quota keys for extended resources: only ``requests.<name>`` is allowed for them."""
    return {f"requests.{name}": str(count) for name, count in sorted(resources.items())}


def pod_spec_fragment(
    resources: dict[str, int],
    nodegroup: str | None = None,
    zone: str | None = None,
    placement_group: str | None = None,
    taints: Iterable[Taint] = (),
    node_names: Iterable[str] = (),
) -> dict[str, Any]:
    """The part of a pod spec that puts a tenant's pod on its leased nodes.

    Merge it into ``spec`` (``affinity``, ``tolerations``) and into each GPU container
    (``resources``). Limits equal requests: extended resources cannot be overcommitted.
    """
    expressions: list[dict[str, Any]] = []
    if nodegroup:
        expressions.append({"key": NODEGROUP_LABEL, "operator": "In", "values": [nodegroup]})
    if zone:
        expressions.append({"key": ZONE_LABEL, "operator": "In", "values": [zone]})
    if placement_group:
        expressions.append({"key": PLACEMENT_GROUP_LABEL, "operator": "In", "values": [placement_group]})
    names = sorted(set(node_names))
    if names:
        expressions.append({"key": "kubernetes.io/hostname", "operator": "In", "values": names})
    fragment: dict[str, Any] = {}
    if expressions:
        fragment["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        }
    tolerations = [t.toleration() for t in taints]
    if not any(t["key"] == GPU_RESOURCE for t in tolerations) and any(
        r == GPU_RESOURCE or r.startswith(MIG_RESOURCE_PREFIX) for r in resources
    ):
        # EKS GPU AMIs and the GPU operator commonly taint GPU nodes with nvidia.com/gpu.
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        fragment["tolerations"] = tolerations
    amounts = {name: str(count) for name, count in sorted(resources.items())}
    fragment["containerResources"] = {"limits": dict(amounts), "requests": dict(amounts)}
    return fragment
