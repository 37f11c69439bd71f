"""What a Kubernetes GPU node is to gpufabric (``KubeGpuHost``, read from a Node), and the device plugin's sharing
config, the applied sharing and a lease's tenant access as the EKS backend writes them."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from drivers.eks.kube_labels import (
    DEVICE_PLUGIN_CONFIG_LABEL,
    EFA_RESOURCE,
    GPU_RESOURCE,
    INSTANCE_TYPE_LABEL,
    MIG_RESOURCE_PREFIX,
    NETWORK_LAYER_LABELS,
    NODEGROUP_LABEL,
    REGION_LABEL,
    ZONE_LABEL,
)
from drivers.eks.models import Taint


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
