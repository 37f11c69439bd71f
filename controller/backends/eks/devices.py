"""The devices and labels an EKS host shows without an agent: node capacity and GFD labels, or a nodegroup's facts
for headroom."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from controller.backends.eks.cluster import EFA_LABEL, KARPENTER_POOL_LABEL, PLACEMENT_GROUP_HOST_LABEL, SOURCE_LABEL
from controller.backends.eks.config import NodegroupSharing
from drivers.eks import PLACEMENT_GROUP_LABEL, EksNodegroupConfig
from drivers.eks.kube_labels import INSTANCE_TYPE_LABEL, NODEGROUP_LABEL, REGION_LABEL, ZONE_LABEL
from drivers.eks.kube_models import KubeGpuHost

KEPT_LABEL_PREFIXES = ("topology.", "eks.amazonaws.com/", "nvidia.com/gpu.", "gpufabric.io/", "node.kubernetes.io/")


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


@cache
def nvml_name(gfd_product: str | None, fallback_model: str | None = None) -> tuple[str, int | None]:
    """The NVML device name (and memory) for GFD's ``nvidia.com/gpu.product`` ("NVIDIA-L4" -> "NVIDIA L4")."""
    from drivers.gpus.catalog import load_catalog

    catalog = load_catalog()
    if gfd_product:
        wanted = _norm(gfd_product.removesuffix("-SHARED"))
        for p in catalog.products.values():
            if _norm(p.name) == wanted or _norm(p.model) == wanted:
                return p.name, p.memory_mib
    if fallback_model:
        try:
            p = catalog.product(fallback_model)
            return p.name, p.memory_mib
        except KeyError:
            pass
    return (gfd_product or fallback_model or "unknown GPU").replace("-", " "), None


def _replicas(node: KubeGpuHost | None, sharing: NodegroupSharing | None) -> tuple[str | None, int]:
    if sharing is not None:
        return sharing.slice_kind, sharing.replicas
    if node is not None and (node.gpu_replicas or 0) > 1 and node.sharing_strategy in ("time-slicing", "mps"):
        return ("mps" if node.sharing_strategy == "mps" else "timeslice"), int(node.gpu_replicas or 0)
    return None, 0


def device_docs(
    name: str, node: KubeGpuHost | None, ng: EksNodegroupConfig | None, sharing: NodegroupSharing | None
) -> list[dict[str, Any]]:
    """The devices a host shows without an agent (node capacity + GFD, or the nodegroup's facts for headroom)."""
    kind, replicas = _replicas(node, sharing)
    if node is not None:
        count = node.gpu_count or (node.gpus // node.gpu_replicas if node.gpu_replicas else node.gpus)
        product, memory = nvml_name(node.gpu_product, ng.gpu_model if ng else None)
        memory = node.gpu_memory_mib or memory
    else:
        count = (ng.gpus_per_node or 0) if ng else 0
        product, memory = nvml_name(None, ng.gpu_model if ng else None)
        memory = (ng.gpu_memory_mib if ng else None) or memory
    docs = []
    for i in range(count):
        uuid = f"EKS-{name}-gpu{i}"[:96]
        slices = [{"parent_uuid": uuid, "kind": kind, "count": replicas}] if kind else []
        docs.append({"uuid": uuid, "index": i, "model": product, "memory_mib": int(memory or 0), "slices": slices})
    return docs


def node_labels(node: KubeGpuHost, ng: EksNodegroupConfig | None) -> dict[str, str]:
    labels = {k: v for k, v in node.labels.items() if k.startswith(KEPT_LABEL_PREFIXES)}
    labels[SOURCE_LABEL] = "node"
    if node.zone:
        labels[ZONE_LABEL] = node.zone
    if node.region:
        labels[REGION_LABEL] = node.region
    if node.nodegroup:
        labels[NODEGROUP_LABEL] = node.nodegroup
    if node.instance_type:
        labels[INSTANCE_TYPE_LABEL] = node.instance_type
    if node.efa:
        labels[EFA_LABEL] = str(node.efa)
    if node.labels.get("karpenter.sh/nodepool"):
        labels[KARPENTER_POOL_LABEL] = node.labels["karpenter.sh/nodepool"]
    group = node.labels.get(PLACEMENT_GROUP_LABEL) or (ng.placement_group if ng else None)
    if group:
        labels[PLACEMENT_GROUP_HOST_LABEL] = group
    return labels
