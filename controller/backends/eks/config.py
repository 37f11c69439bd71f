"""The stored config of an ``eks`` backend: the eksctl import plus where the controller reaches AWS and Kubernetes.

``POST /v1/backends`` validates it with :class:`EksConfig` (``EksBackend.config_model``).
The nodegroup part is exactly :class:`drivers.eks.EksBackendConfig` (``gpufabric eks import-eksctl`` makes
it); the rest is the controller's: Kubernetes API access, what to do when a nodegroup is at ``maxSize``,
whether idle nodes are scaled down on release, and per-nodegroup GPU sharing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.backends.secrets import SECRET
from drivers.eks import AwsTarget, EksBackendConfig, EksNodegroupConfig
from drivers.eks.karpenter import KarpenterGpuPool
from drivers.eks.kube_labels import DEFAULT_DEVICE_PLUGIN_CONFIGMAP, DEFAULT_DEVICE_PLUGIN_NAMESPACE

SHARED_RESOURCE = "nvidia.com/gpu.shared"


class NodegroupSharing(BaseModel):
    """How the device plugin shares each GPU of a nodegroup (written to its ConfigMap when a share is leased)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["time-slicing", "mps"] = "time-slicing"
    replicas: int = Field(ge=2, le=64)
    rename: bool = Field(
        default=True,
        description=f"Advertise shares as {SHARED_RESOURCE} (renameByDefault) rather than nvidia.com/gpu",
    )

    @property
    def resource(self) -> str:
        return SHARED_RESOURCE if self.rename else "nvidia.com/gpu"

    @property
    def slice_kind(self) -> Literal["timeslice", "mps"]:
        return "mps" if self.strategy == "mps" else "timeslice"

    def config_name(self, nodegroup: str) -> str:
        kind = "ts" if self.strategy == "time-slicing" else "mps"
        return f"{nodegroup}-{kind}{self.replicas}"[:63].strip("-")


class EksConfig(EksBackendConfig):
    """The whole schema: an unknown field, here or in a nodegroup, is refused (422), so nothing unvalidated (and
    nothing unmasked) is stored. ``kube_token`` is secret (:data:`controller.backends.secrets.SECRET`): stored,
    never shown."""

    model_config = ConfigDict(extra="forbid")

    # Kubernetes API: either URL (+ token, CA), a kubeconfig file and context, or in-cluster. Leases, sync and the
    # NCCL validation runner all reach the cluster through it (controller.backends.eks.cluster.kube_cluster).
    kube_api_url: str | None = Field(default=None, description="Kubernetes API server URL")
    kube_token: str | None = Field(
        default=None, description="Bearer token (a ServiceAccount token); secret", json_schema_extra=SECRET
    )
    kube_ca_data: str | None = Field(default=None, description="CA bundle, PEM or base64 PEM (as EKS returns it)")
    kube_verify_ssl: bool = True
    kubeconfig: str | None = Field(default=None, description="kubeconfig file on the controller host")
    kube_context: str | None = None
    kube_in_cluster: bool = Field(
        default=False, description="Use the pod's ServiceAccount (the controller runs in this cluster)"
    )
    aws_profile: str | None = Field(default=None, description="Named AWS profile (default: the ambient credentials)")
    tenant_api_url: str | None = Field(
        default=None,
        description="The API server address written into tenants' kubeconfigs (the cluster's public endpoint); "
        "default: the address gpufabric reaches it at",
    )
    tenant_token_s: int = Field(
        default=7 * 86400,
        ge=600,
        le=366 * 86400,
        description="Lifetime asked for a lease's ServiceAccount token when the lease has no duration (with a "
        "duration: the duration); the API server may shorten it (--service-account-max-token-expiration)",
    )

    at_max: Literal["wait", "fail"] = Field(
        default="fail",
        description="A lease that needs a new node of a nodegroup at maxSize: fail with the reason, or wait "
        "(provisioning) until a node of the nodegroup is free",
    )
    scale_down: Literal["never", "idle"] = Field(
        default="never",
        description="On release: 'idle' lowers desiredSize by the nodegroup's idle nodes (never below minSize)",
    )
    headroom: bool = Field(
        default=True,
        description="Offer nodes a nodegroup could still start (maxSize - desiredSize) to placement",
    )
    device_plugin_namespace: str = DEFAULT_DEVICE_PLUGIN_NAMESPACE
    device_plugin_configmap: str = DEFAULT_DEVICE_PLUGIN_CONFIGMAP
    vpc_cni: dict[str, str] = Field(
        default_factory=dict,
        description="The aws-node DaemonSet's env (WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET, MAX_ENI) "
        "for the networking checks",
    )
    sharing: dict[str, NodegroupSharing] = Field(
        default_factory=dict, description="Nodegroup name -> GPU sharing (time-slicing / MPS)"
    )
    karpenter: list[KarpenterGpuPool] = Field(
        default_factory=list,
        description="GPU pools served by Karpenter: the sync writes each one's NodePool and EC2NodeClass",
    )
    karpenter_placeholder_namespace: str = Field(
        default="gpufabric",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Where the placeholder pods that make Karpenter launch a lease's nodes go (the controller's)",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_nodegroup_fields(cls, data: Any) -> Any:
        # The nodegroup model (drivers.eks) ignores unknown fields; here they are refused like any other.
        if isinstance(data, dict):
            known = set(EksNodegroupConfig.model_fields)
            for i, ng in enumerate(data.get("nodegroups") or []):
                unknown = sorted(set(ng) - known) if isinstance(ng, dict) else []
                if unknown:
                    raise ValueError(f"nodegroups.{i}: unknown field(s) {', '.join(unknown)}")
        return data

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> EksConfig:
        """A config as stored: rows written before the schema refused unknown fields may carry some; they are
        ignored (never used, never shown)."""
        known = set(cls.model_fields)
        return cls.model_validate({k: v for k, v in raw.items() if k in known})

    @model_validator(mode="after")
    def _check(self) -> EksConfig:
        if self.kube_api_url is not None and self.kubeconfig is not None:
            raise ValueError("give kube_api_url or kubeconfig, not both")
        names = {ng.name for ng in self.nodegroups}
        pools = [p.name for p in self.karpenter]
        if len(pools) != len(set(pools)):
            raise ValueError(f"karpenter: pool names must be unique, got {', '.join(sorted(pools))}")
        unknown = sorted(set(self.sharing) - names)
        if unknown and names:
            raise ValueError(
                f"sharing names unknown nodegroups: {', '.join(unknown)} (known: {', '.join(sorted(names))})"
            )
        return self

    @property
    def aws(self) -> AwsTarget:
        return AwsTarget(region=self.region, endpoint_url=self.endpoint_url, profile=self.aws_profile)

    @property
    def has_kube(self) -> bool:
        return bool(self.kube_api_url or self.kubeconfig or self.kube_in_cluster)

    def nodegroup(self, name: str | None) -> EksNodegroupConfig | None:
        return next((ng for ng in self.nodegroups if ng.name == name), None)
