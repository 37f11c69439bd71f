"""Karpenter as an alternative to managed nodegroups: the NodePool (``karpenter.sh/v1``) and EC2NodeClass
(``karpenter.k8s.aws/v1``) objects for one GPU pool, and reading a NodePool's room to grow.

A :class:`KarpenterGpuPool` names what the pool may launch (instance families or exact types), the capacity type
(``on-demand``, ``spot``, ``reserved`` -- Karpenter's name for ODCRs and Capacity Blocks, selected on the
EC2NodeClass by ``capacityReservationSelectorTerms``), taints, labels and limits (``nvidia.com/gpu`` and/or
nodes' worth of it). gpufabric writes both objects; Karpenter launches nodes for pods that do not fit, so a
lease on the pool is satisfiable while the NodePool's GPU limit has room (:func:`gpu_room`).
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.eks.errors import KubeError
from drivers.eks.models import Taint

NODEPOOL_API = "karpenter.sh/v1"
NODECLASS_API = "karpenter.k8s.aws/v1"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
GPU_RESOURCE = "nvidia.com/gpu"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FAMILY = re.compile(r"^[a-z][a-z0-9-]*$")
_RESERVATION = re.compile(r"^cr-[0-9a-z]+$")

KarpenterCapacityType = Literal["on-demand", "spot", "reserved"]


def _on_demand() -> list[KarpenterCapacityType]:
    return ["on-demand"]


class ReservationSelector(BaseModel):
    """One ``capacityReservationSelectorTerms`` entry: a reservation id, or tags (and the owner of a shared one)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    owner_id: str | None = Field(default=None, pattern=r"^[0-9]{12}$")

    @model_validator(mode="after")
    def _one_way(self) -> ReservationSelector:
        if self.id is not None:
            if not _RESERVATION.match(self.id):
                raise ValueError(f"id: must look like cr-0123456789abcdef0, got {self.id!r}")
            if self.tags or self.owner_id:
                raise ValueError("id: select a reservation by id or by tags (+ owner_id), not both")
        elif not self.tags:
            raise ValueError("give id or tags")
        return self

    def term(self) -> dict[str, Any]:
        if self.id is not None:
            return {"id": self.id}
        term: dict[str, Any] = {"tags": dict(self.tags)}
        if self.owner_id:
            term["ownerID"] = self.owner_id
        return term


class KarpenterGpuPool(BaseModel):
    """A GPU pool served by Karpenter (the ``karpenter`` list of an EKS backend's config)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="NodePool and EC2NodeClass name (a DNS label)")
    instance_families: list[str] = Field(default_factory=list, description="e.g. p5, p4d, g6")
    instance_types: list[str] = Field(default_factory=list, description="exact types, e.g. p5.48xlarge")
    capacity_types: list[KarpenterCapacityType] = Field(default_factory=lambda: _on_demand())
    reservations: list[ReservationSelector] = Field(default_factory=list)
    gpus_per_node: int = Field(ge=1, description="GPUs of one node the pool launches (for limits and headroom)")
    gpu_model: str | None = None
    max_nodes: int = Field(ge=1, description="the NodePool's limit, as nvidia.com/gpu = max_nodes x gpus_per_node")
    taints: list[Taint] = Field(default_factory=lambda: [Taint(key=GPU_RESOURCE, value="true", effect="NoSchedule")])
    labels: dict[str, str] = Field(default_factory=dict)
    node_role: str = Field(description="IAM role name of the nodes (EC2NodeClass spec.role)")
    ami_alias: str = Field(default="al2023@latest", pattern=r"^(al2|al2023|bottlerocket)@[A-Za-z0-9.\-]+$")
    discovery_tag: str = Field(description="karpenter.sh/discovery tag value of the cluster's subnets / groups")
    availability_zones: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value) or len(value) > 63:
            raise ValueError(f"must be a DNS label (a-z, 0-9, '-'), got {value!r}")
        return value

    @field_validator("instance_families")
    @classmethod
    def _families(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if not _FAMILY.match(f) or "." in f]
        if bad:
            raise ValueError(f"instance families are like p5 or g6e, without a size: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KarpenterGpuPool:
        if not (self.instance_families or self.instance_types):
            raise ValueError("instance_families or instance_types: name what the pool may launch")
        if self.reservations and "reserved" not in self.capacity_types:
            raise ValueError("capacity_types: add 'reserved' to launch into the reservations named")
        if "reserved" in self.capacity_types and not self.reservations:
            raise ValueError("reservations: 'reserved' capacity needs a reservation selector (id or tags)")
        if not self.capacity_types:
            raise ValueError("capacity_types: at least one of on-demand, spot, reserved")
        return self

    @property
    def gpu_limit(self) -> int:
        return self.max_nodes * self.gpus_per_node

    def node_pool(self) -> dict[str, Any]:
        requirements: list[dict[str, Any]] = [
            {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": sorted(self.capacity_types)},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ]
        if self.instance_families:
            requirements.append(
                {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": sorted(self.instance_families)}
            )
        if self.instance_types:
            requirements.append(
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": sorted(self.instance_types)}
            )
        if self.availability_zones:
            requirements.append(
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": sorted(self.availability_zones)}
            )
        return {
            "apiVersion": NODEPOOL_API,
            "kind": "NodePool",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "gpufabric"}},
            "spec": {
                "template": {
                    "metadata": {"labels": {"gpufabric.io/pool": self.name, **self.labels}},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": self.name},
                        "requirements": requirements,
                        "taints": [t.to_kube() for t in self.taints],
                        "expireAfter": "Never",  # a leased node is released by its lease, not by age
                    },
                },
                "limits": {GPU_RESOURCE: str(self.gpu_limit)},
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"},
            },
        }

    def node_class(self) -> dict[str, Any]:
        selector = [{"tags": {"karpenter.sh/discovery": self.discovery_tag}}]
        spec: dict[str, Any] = {
            "role": self.node_role,
            "amiSelectorTerms": [{"alias": self.ami_alias}],
            "subnetSelectorTerms": selector,
            "securityGroupSelectorTerms": selector,
        }
        if self.reservations:
            spec["capacityReservationSelectorTerms"] = [r.term() for r in self.reservations]
        return {
            "apiVersion": NODECLASS_API,
            "kind": "EC2NodeClass",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "gpufabric"}},
            "spec": spec,
        }


def gpu_room(pool: KarpenterGpuPool, nodes_running: int) -> tuple[int, str | None]:
    """Nodes Karpenter may still launch for the pool under its GPU limit, and the reason when none."""
    room = max(0, pool.max_nodes - nodes_running)
    if room:
        return room, None
    return 0, (
        f"Karpenter NodePool {pool.name} is at its limit {GPU_RESOURCE}={pool.gpu_limit} "
        f"({nodes_running} of {pool.max_nodes} nodes of {pool.gpus_per_node} GPUs)"
    )


def apply_pool(api_client: Any, pool: KarpenterGpuPool) -> dict[str, str]:
    """Create or replace the pool's EC2NodeClass and NodePool (the class first: the pool refers to it).

    Returns ``{"EC2NodeClass": "created"|"updated"|"unchanged", "NodePool": ...}``."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = k8s.CustomObjectsApi(api_client)
    out: dict[str, str] = {}
    for obj in (pool.node_class(), pool.node_pool()):
        group, version = obj["apiVersion"].split("/")
        plural = "ec2nodeclasses" if obj["kind"] == "EC2NodeClass" else "nodepools"
        name = obj["metadata"]["name"]
        try:
            try:
                current = cast(dict[str, Any], api.get_cluster_custom_object(group, version, plural, name))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                api.create_cluster_custom_object(group, version, plural, obj)
                out[obj["kind"]] = "created"
                continue
            if (
                current.get("spec") == obj["spec"]
                and (current["metadata"].get("labels") or {}) == obj["metadata"]["labels"]
            ):
                out[obj["kind"]] = "unchanged"
                continue
            replaced = {
                **obj,
                "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            api.replace_cluster_custom_object(group, version, plural, name, replaced)
            out[obj["kind"]] = "updated"
        except ApiException as exc:
            raise KubeError(f"{obj['kind']} {name}: {exc.status} {exc.reason}", exc.status or 0, exc.reason) from None
    return out
