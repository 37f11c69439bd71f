"""Leases on Karpenter GPU pools: headroom under the NodePool's GPU limit, and scale-up by placeholder pods.

Karpenter launches a node when a pod cannot be scheduled. A lease placed on a pool's headroom host therefore
creates one placeholder pod per node it needs (namespace ``karpenter_placeholder_namespace``, default ``gpufabric``, the pool's GPUs per node
requested, a node selector on ``karpenter.sh/nodepool``, the pool's taints tolerated); Karpenter launches the node,
the sync moves the lease's claims onto it (as for nodegroups) and provisioning deletes the lease's placeholders
before it grants the node, so the tenant's pods get the GPUs. At the NodePool's limit the backend's ``at_max``
policy answers: fail with the figures, or wait for a node of the pool to free up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.backends.eks.cluster import (
    KARPENTER_POOL_LABEL,
    SCALE_REQUESTED_LABEL,
    SOURCE_LABEL,
    is_headroom,
)
from controller.backends.eks.config import EksConfig
from controller.backends.eks.devices import device_docs
from controller.backends.eks.report import SyncReport
from controller.backends.hostsync import apply_devices
from controller.fleet.states import set_host_status
from controller.store.models import Host
from drivers.eks import EksNodegroupConfig
from drivers.eks.errors import KubeError
from drivers.eks.karpenter import NODEPOOL_LABEL, KarpenterGpuPool, gpu_room
from drivers.eks.kube_labels import INSTANCE_TYPE_LABEL, NODEGROUP_LABEL, REGION_LABEL, ZONE_LABEL

PLACEHOLDER_NAMESPACE = "gpufabric"
PLACEHOLDER_LABEL = "gpufabric.io/karpenter-placeholder"
LEASE_LABEL = "gpufabric.io/lease"
HEADROOM_COST = "100"


def group_of(labels: dict[str, str] | None) -> str | None:
    """What a host scales with: its nodegroup, or ``karpenter:<pool>``."""
    labels = labels or {}
    if labels.get(KARPENTER_POOL_LABEL):
        return f"karpenter:{labels[KARPENTER_POOL_LABEL]}"
    return labels.get(NODEGROUP_LABEL)


def pool_of(config: EksConfig, group: str | None) -> KarpenterGpuPool | None:
    if not group or not group.startswith("karpenter:"):
        return None
    name = group.removeprefix("karpenter:")
    return next((p for p in config.karpenter if p.name == name), None)


def as_nodegroup(pool: KarpenterGpuPool) -> EksNodegroupConfig:
    """The pool's node shape in the nodegroup model, for the devices of its headroom hosts."""
    return EksNodegroupConfig(
        name=pool.name,
        managed=True,
        instance_types=list(pool.instance_types),
        min=0,
        max=pool.max_nodes,
        desired=0,
        efa=False,
        gpus_per_node=pool.gpus_per_node,
        gpu_model=pool.gpu_model,
    )


def _nodes_of(hosts: list[Host], pool: str) -> list[Host]:
    return [h for h in hosts if not is_headroom(h) and (h.labels or {}).get(KARPENTER_POOL_LABEL) == pool]


def sync_karpenter_headroom(
    session: Session,
    config: EksConfig,
    backend_id: int,
    backend_name: str,
    busy: set[int],
    now: datetime,
    report: SyncReport,
) -> None:
    """Per pool: ``max(1, room under the limit)`` headroom hosts (at the limit one stays, for the figures)."""
    # From the session (autoflushed), not ``hosts``: nodes this sync added count as running.
    current = list(session.scalars(select(Host).where(Host.backend_id == backend_id)))
    for pool in config.karpenter:
        mine = sorted(
            (h for h in current if is_headroom(h) and (h.labels or {}).get(KARPENTER_POOL_LABEL) == pool.name),
            key=lambda h: h.hostname,
        )
        running = len(_nodes_of(current, pool.name))
        asked = sum(1 for h in mine if (h.labels or {}).get(SCALE_REQUESTED_LABEL))
        room, _ = gpu_room(pool, running + asked)
        wanted = max(1, room)
        free = [h for h in mine if h.id not in busy]
        for host in free[wanted:]:
            session.delete(host)
            report.removed.append(host.hostname)
            report.changed.append(host.hostname)
        free = free[:wanted]
        taken = {h.hostname for h in mine}
        k = 0
        while len(free) < wanted:
            while f"{backend_name}.karpenter-{pool.name}.headroom-{k}" in taken:
                k += 1
            host = Host(hostname=f"{backend_name}.karpenter-{pool.name}.headroom-{k}", backend_id=backend_id)
            host.registered_at = now
            taken.add(host.hostname)
            session.add(host)
            free.append(host)
        labels = {
            SOURCE_LABEL: "headroom",
            KARPENTER_POOL_LABEL: pool.name,
            REGION_LABEL: config.region,
            "gpufabric.dev/cost": HEADROOM_COST,
        }
        if pool.instance_types:
            labels[INSTANCE_TYPE_LABEL] = pool.instance_types[0]
        if len(pool.availability_zones) == 1:
            labels[ZONE_LABEL] = pool.availability_zones[0]
        shape = as_nodegroup(pool)
        for host in free:
            docs = device_docs(host.hostname, None, shape, None)
            before = (dict(host.labels or {}), host.inventory_hash, host.status)
            host.labels = labels
            host.inventory_hash = apply_devices(host, docs, now)
            set_host_status(host, "ready")
            host.health = "healthy"
            host.last_seen = now
            if before != (host.labels, host.inventory_hash, host.status):
                report.changed.append(host.hostname)
        report.headroom[f"karpenter:{pool.name}"] = wanted


def karpenter_room(session_hosts: list[Host], pool: KarpenterGpuPool, lease_id: str) -> tuple[int, str | None]:
    """Nodes the pool may still launch: its limit minus running nodes and nodes other leases already asked for."""
    running = len(_nodes_of(session_hosts, pool.name))
    asked = sum(
        1
        for h in session_hosts
        if is_headroom(h)
        and (h.labels or {}).get(KARPENTER_POOL_LABEL) == pool.name
        and (h.labels or {}).get(SCALE_REQUESTED_LABEL) not in (None, lease_id)
    )
    return gpu_room(pool, running + asked)


def placeholder_pod(
    pool: KarpenterGpuPool, lease_id: str, k: int, namespace: str = PLACEHOLDER_NAMESPACE
) -> dict[str, Any]:
    gpus = str(pool.gpus_per_node)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"gf-karpenter-{lease_id[:12]}-{k}".lower(),
            "namespace": namespace,
            "labels": {PLACEHOLDER_LABEL: pool.name, LEASE_LABEL: lease_id},
        },
        "spec": {
            "nodeSelector": {NODEPOOL_LABEL: pool.name},
            "tolerations": [
                {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
                if t.value is not None
                else {"key": t.key, "operator": "Exists", "effect": t.effect}
                for t in pool.taints
            ],
            "containers": [
                {
                    "name": "placeholder",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }


def create_placeholders(
    api_client: Any, pool: KarpenterGpuPool, lease_id: str, count: int, namespace: str = PLACEHOLDER_NAMESPACE
) -> list[str]:
    """One placeholder pod per node the lease needs (an existing one is kept: provisioning is re-entrant)."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = k8s.CoreV1Api(api_client)
    names = []
    for k in range(count):
        pod = placeholder_pod(pool, lease_id, k, namespace)
        try:
            api.create_namespaced_pod(namespace, cast(Any, pod))
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(f"placeholder pod for Karpenter pool {pool.name}: {exc.status} {exc.reason}") from None
        names.append(pod["metadata"]["name"])
    return names


def delete_placeholders(api_client: Any, lease_id: str, namespace: str = PLACEHOLDER_NAMESPACE) -> int:
    """The lease's placeholder pods, deleted (its node is up, or it is released)."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = k8s.CoreV1Api(api_client)
    try:
        pods = api.list_namespaced_pod(namespace, label_selector=f"{LEASE_LABEL}={lease_id}").items
        for pod in pods:
            name = pod.metadata.name if pod.metadata is not None else None
            if not name:
                continue
            try:
                api.delete_namespaced_pod(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
    except ApiException as exc:
        if exc.status == 404:
            return 0
        raise KubeError(f"placeholder pods of lease {lease_id}: {exc.status} {exc.reason}") from None
    return len(pods)
