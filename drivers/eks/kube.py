"""Kubernetes side of an EKS backend, with the official ``kubernetes`` client.

The client configuration is always built explicitly (host + token/CA, or a named kubeconfig file):
nothing here reads ``$KUBECONFIG`` or ``~/.kube/config`` on its own, so a controller never talks to
whatever cluster its shell happened to point at.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from drivers.eks.errors import KubeError
from drivers.eks.kube_labels import (
    DEFAULT_DEVICE_PLUGIN_CONFIGMAP,
    DEFAULT_DEVICE_PLUGIN_NAMESPACE,
    DEFAULT_PAGE_SIZE,
    DEVICE_PLUGIN_CONFIG_LABEL,
    GPU_RESOURCE,
    LEASE_LABEL,
    LIST_ATTEMPTS,
    MANAGED_BY_LABEL,
    MIG_RESOURCE_PREFIX,
    NODEGROUP_LABEL,
    ZONE_LABEL,
)
from drivers.eks.kube_models import (
    DevicePluginSharing,
    KubeGpuHost,
    SharingApplied,
    TenantAccess,
    host_from_node,
    is_gpu_host,
)
from drivers.eks.models import PLACEMENT_GROUP_LABEL, Taint

T = TypeVar("T")

log = logging.getLogger("gpufabric.eks.kube")

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


# -- the client wrapper ------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _kube_call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as exc:
        raise KubeError(
            f"{what}: {exc.status} {exc.reason}: {status_message(exc)}", exc.status or 0, exc.reason
        ) from None
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # MaxRetryError etc. are not OSErrors
        raise KubeError(f"{what}: cannot reach the API server: {exc}") from None


def status_message(exc: ApiException) -> str:
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
