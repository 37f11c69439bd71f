"""EKS clusters and managed nodegroups through boto3, with instance-type facts from EC2.

Scaling never goes past a nodegroup's min/max: at the limit the call returns a refusal with the
figures, and the caller's policy decides whether a lease waits or fails.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.eks.aws import AwsTarget, call
from drivers.eks.errors import ClusterNotFound, NodegroupExists, NodegroupNotFound, UnknownInstanceType
from drivers.eks.models import Taint

FactsSource = Literal["ec2:DescribeInstanceTypes", "builtin"]


class InstanceTypeFacts(BaseModel):
    """What placement and the networking checks need to know about one EC2 instance type."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    vcpus: int | None = None
    memory_mib: int | None = None
    gpu_model: str | None = Field(default=None, description="As EC2 names it: L4, H100, A10G, T4 ...")
    gpu_manufacturer: str | None = None
    gpu_count: int = 0
    gpu_memory_mib: int | None = Field(default=None, description="Per GPU")
    efa_supported: bool = False
    max_efa_interfaces: int = 0
    network_performance: str | None = Field(default=None, description='EC2 wording, e.g. "40 Gigabit"')
    network_gbps: float | None = None
    network_cards: int = 1
    max_enis: int
    ipv4_per_eni: int
    source: FactsSource = "ec2:DescribeInstanceTypes"

    @property
    def has_gpus(self) -> bool:
        return self.gpu_count > 0


_GBPS = re.compile(r"(?:(?P<mult>\d+)\s*x\s*)?(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>Gigabit|Megabit)", re.IGNORECASE)


def parse_network_gbps(performance: str | None) -> float | None:
    """``"40 Gigabit"`` → 40, ``"Up to 25 Gigabit"`` → 25 (the burst ceiling), ``"4x 100 Gigabit"`` → 400.

    Older wording without a figure (``"Moderate"``, ``"High"``) gives None.
    """
    if not performance:
        return None
    match = _GBPS.search(performance)
    if not match:
        return None
    value = float(match["num"]) * int(match["mult"] or 1)
    if match["unit"].lower() == "megabit":
        value /= 1000
    return value


def facts_from_ec2(raw: dict[str, Any]) -> InstanceTypeFacts:
    """Build facts from one ``InstanceTypes[]`` entry of ``ec2.describe_instance_types``."""
    gpus = (raw.get("GpuInfo") or {}).get("Gpus") or []
    # Every current GPU type carries one GPU model; if EC2 ever lists several, count them all and name the first.
    first = gpus[0] if gpus else {}
    network = raw.get("NetworkInfo") or {}
    performance = network.get("NetworkPerformance")
    return InstanceTypeFacts(
        instance_type=raw["InstanceType"],
        vcpus=(raw.get("VCpuInfo") or {}).get("DefaultVCpus"),
        memory_mib=(raw.get("MemoryInfo") or {}).get("SizeInMiB"),
        gpu_model=first.get("Name"),
        gpu_manufacturer=first.get("Manufacturer"),
        gpu_count=sum(int(g.get("Count", 0)) for g in gpus),
        gpu_memory_mib=(first.get("MemoryInfo") or {}).get("SizeInMiB"),
        efa_supported=bool(network.get("EfaSupported", False)),
        max_efa_interfaces=int((network.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)),
        network_performance=performance,
        network_gbps=parse_network_gbps(performance),
        network_cards=int(network.get("MaximumNetworkCards", 1)),
        max_enis=int(network.get("MaximumNetworkInterfaces", 1)),
        ipv4_per_eni=int(network.get("Ipv4AddressesPerInterface", 1)),
    )


class InstanceTypeCache:
    """Instance-type facts per (endpoint, region), kept ``ttl_seconds``; AWS changes them rarely, callers ask often."""

    def __init__(self, ttl_seconds: float = 6 * 3600, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str | None, str, str], tuple[float, InstanceTypeFacts]] = {}
        self.ec2_calls = 0

    def facts(self, ec2: Any, instance_types: Iterable[str]) -> dict[str, InstanceTypeFacts]:
        """Facts for each requested type (one ``describe_instance_types`` call for all misses)."""
        region = str(ec2.meta.region_name)
        endpoint = getattr(ec2.meta, "endpoint_url", None)
        wanted = list(dict.fromkeys(instance_types))
        now = self._clock()
        found: dict[str, InstanceTypeFacts] = {}
        with self._lock:
            for name in wanted:
                entry = self._entries.get((endpoint, region, name))
                if entry and entry[0] > now:
                    found[name] = entry[1]
        missing = [n for n in wanted if n not in found]
        if missing:
            fetched = _describe_instance_types(ec2, missing)
            self.ec2_calls += 1
            with self._lock:
                for name, facts in fetched.items():
                    self._entries[(endpoint, region, name)] = (now + self.ttl_seconds, facts)
            found.update(fetched)
        return {name: found[name] for name in wanted}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _describe_instance_types(ec2: Any, names: list[str]) -> dict[str, InstanceTypeFacts]:
    def unknown(message: str) -> UnknownInstanceType:
        return UnknownInstanceType(f"unknown instance type(s) {', '.join(names)}: {message}")

    out: dict[str, InstanceTypeFacts] = {}
    # The API takes at most 100 names per call.
    for start in range(0, len(names), 100):
        chunk = names[start : start + 100]
        response = call(
            "ec2:DescribeInstanceTypes",
            lambda chunk=chunk: ec2.describe_instance_types(InstanceTypes=chunk),  # type: ignore[misc]
            {"InvalidInstanceType": unknown},
        )
        for raw in response.get("InstanceTypes", []):
            facts = facts_from_ec2(raw)
            out[facts.instance_type] = facts
    absent = [n for n in names if n not in out]
    if absent:
        raise UnknownInstanceType(f"unknown instance type(s): {', '.join(absent)}")
    return out


_DEFAULT_CACHE = InstanceTypeCache()


class ScalingConfig(BaseModel):
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    desired: int = Field(ge=0)


class ClusterInfo(BaseModel):
    name: str
    arn: str | None = None
    status: str | None = None
    version: str | None = None
    endpoint: str | None = None
    certificate_authority: str | None = Field(default=None, description="Base64 PEM from describe_cluster")
    vpc_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)


class NodegroupInfo(BaseModel):
    cluster: str
    name: str
    status: str | None = None
    instance_types: list[str] = Field(default_factory=list)
    capacity_type: str | None = None
    scaling: ScalingConfig
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    subnets: list[str] = Field(default_factory=list)
    ami_type: str | None = None
    launch_template_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class ScaleOutcome(BaseModel):
    """The result of a scaling request. ``refused`` is not an error: the caller's policy decides (wait or fail)."""

    cluster: str
    nodegroup: str
    previous_desired: int
    desired: int
    min: int
    max: int
    changed: bool
    refused: bool = False
    reason: str | None = None


class NodegroupCreate(BaseModel):
    """What ``create_nodegroup`` needs; built by the eksctl import or by hand."""

    name: str
    instance_types: list[str] = Field(min_length=1)
    scaling: ScalingConfig
    subnets: list[str] = Field(min_length=1)
    node_role: str
    capacity_type: Literal["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"] = "ON_DEMAND"
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    launch_template_id: str | None = None
    ami_type: str | None = None


class EksNodegroups:
    """Clusters and managed nodegroups of one region."""

    def __init__(self, eks: Any, ec2: Any | None = None, cache: InstanceTypeCache | None = None) -> None:
        self.eks = eks
        self.ec2 = ec2
        self.cache = cache if cache is not None else _DEFAULT_CACHE

    @classmethod
    def connect(cls, target: AwsTarget, cache: InstanceTypeCache | None = None) -> EksNodegroups:
        return cls(target.client("eks"), target.client("ec2"), cache)

    # -- clusters -------------------------------------------------------------------------------
    def list_clusters(self) -> list[str]:
        names: list[str] = []
        for page in self.eks.get_paginator("list_clusters").paginate():
            names.extend(page.get("clusters", []))
        return sorted(names)

    def describe_cluster(self, name: str) -> ClusterInfo:
        raw = call(
            "eks:DescribeCluster",
            lambda: self.eks.describe_cluster(name=name)["cluster"],
            {"ResourceNotFoundException": lambda m: ClusterNotFound(f"cluster {name!r} not found: {m}")},
        )
        vpc = raw.get("resourcesVpcConfig") or {}
        return ClusterInfo(
            name=raw["name"],
            arn=raw.get("arn"),
            status=raw.get("status"),
            version=raw.get("version"),
            endpoint=raw.get("endpoint"),
            certificate_authority=(raw.get("certificateAuthority") or {}).get("data"),
            vpc_id=vpc.get("vpcId"),
            subnet_ids=list(vpc.get("subnetIds") or []),
        )

    # -- nodegroups -----------------------------------------------------------------------------
    def list_nodegroups(self, cluster: str) -> list[str]:
        def pages() -> list[str]:
            names: list[str] = []
            for page in self.eks.get_paginator("list_nodegroups").paginate(clusterName=cluster):
                names.extend(page.get("nodegroups", []))
            return names

        return sorted(
            call(
                "eks:ListNodegroups",
                pages,
                {"ResourceNotFoundException": lambda m: ClusterNotFound(f"cluster {cluster!r} not found: {m}")},
            )
        )

    def describe_nodegroup(self, cluster: str, name: str) -> NodegroupInfo:
        raw = call(
            "eks:DescribeNodegroup",
            lambda: self.eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"],
            {"ResourceNotFoundException": lambda m: NodegroupNotFound(f"nodegroup {cluster}/{name} not found: {m}")},
        )
        return _nodegroup_from_eks(raw)

    def describe_nodegroups(self, cluster: str) -> list[NodegroupInfo]:
        return [self.describe_nodegroup(cluster, name) for name in self.list_nodegroups(cluster)]

    def create_nodegroup(self, cluster: str, spec: NodegroupCreate) -> NodegroupInfo:
        params: dict[str, Any] = {
            "clusterName": cluster,
            "nodegroupName": spec.name,
            "scalingConfig": {
                "minSize": spec.scaling.min,
                "maxSize": spec.scaling.max,
                "desiredSize": spec.scaling.desired,
            },
            "subnets": spec.subnets,
            "nodeRole": spec.node_role,
            "instanceTypes": spec.instance_types,
            "capacityType": spec.capacity_type,
            "labels": spec.labels,
            "taints": [t.to_eks() for t in spec.taints],
            "tags": spec.tags,
        }
        if spec.launch_template_id:
            params["launchTemplate"] = {"id": spec.launch_template_id}
        if spec.ami_type:
            params["amiType"] = spec.ami_type
        raw = call(
            "eks:CreateNodegroup",
            lambda: self.eks.create_nodegroup(**params)["nodegroup"],
            {
                "ResourceInUseException": lambda m: NodegroupExists(f"nodegroup {cluster}/{spec.name} exists: {m}"),
                "ResourceNotFoundException": lambda m: ClusterNotFound(f"cluster {cluster!r} not found: {m}"),
            },
        )
        return _nodegroup_from_eks(raw)

    def delete_nodegroup(self, cluster: str, name: str) -> None:
        call(
            "eks:DeleteNodegroup",
            lambda: self.eks.delete_nodegroup(clusterName=cluster, nodegroupName=name),
            {"ResourceNotFoundException": lambda m: NodegroupNotFound(f"nodegroup {cluster}/{name} not found: {m}")},
        )

    # -- facts ----------------------------------------------------------------------------------
    def instance_type_facts(self, instance_types: Iterable[str]) -> dict[str, InstanceTypeFacts]:
        if self.ec2 is None:
            raise UnknownInstanceType("no EC2 client given: instance-type facts need ec2:DescribeInstanceTypes")
        return self.cache.facts(self.ec2, instance_types)

    def nodegroup_facts(self, cluster: str, name: str) -> tuple[NodegroupInfo, dict[str, InstanceTypeFacts]]:
        info = self.describe_nodegroup(cluster, name)
        return info, self.instance_type_facts(info.instance_types)

    # -- scaling --------------------------------------------------------------------------------
    def scale_to(self, cluster: str, name: str, desired: int) -> ScaleOutcome:
        """Set the desired size if it lies within min/max; otherwise refuse with the figures."""
        info = self.describe_nodegroup(cluster, name)
        s = info.scaling
        outcome = ScaleOutcome(
            cluster=cluster,
            nodegroup=name,
            previous_desired=s.desired,
            desired=s.desired,
            min=s.min,
            max=s.max,
            changed=False,
        )
        if desired > s.max:
            outcome.refused = True
            outcome.reason = (
                f"nodegroup {name} is limited to maxSize={s.max} nodes (desired now {s.desired}); "
                f"{desired} requested. Raise maxSize or wait for nodes to free up."
            )
            return outcome
        if desired < s.min:
            outcome.refused = True
            outcome.reason = f"nodegroup {name} keeps at least minSize={s.min} nodes; {desired} requested"
            return outcome
        if desired == s.desired:
            return outcome
        call(
            "eks:UpdateNodegroupConfig",
            lambda: self.eks.update_nodegroup_config(
                clusterName=cluster,
                nodegroupName=name,
                scalingConfig={"minSize": s.min, "maxSize": s.max, "desiredSize": desired},
            ),
            {"ResourceNotFoundException": lambda m: NodegroupNotFound(f"nodegroup {cluster}/{name} not found: {m}")},
        )
        outcome.desired = desired
        outcome.changed = True
        return outcome

    def scale_up(self, cluster: str, name: str, add_nodes: int = 1) -> ScaleOutcome:
        """Add ``add_nodes`` to the desired size, all or nothing (a gang of nodes is useless half-built)."""
        if add_nodes < 1:
            raise ValueError("add_nodes must be at least 1")
        info = self.describe_nodegroup(cluster, name)
        target = info.scaling.desired + add_nodes
        outcome = self.scale_to(cluster, name, target)
        if outcome.refused and target > info.scaling.max:
            headroom = info.scaling.max - info.scaling.desired
            outcome.reason = (
                f"nodegroup {name} is at {info.scaling.desired} of maxSize={info.scaling.max} nodes: "
                f"room for {headroom} more, {add_nodes} requested"
            )
        return outcome

    def scale_down(self, cluster: str, name: str, idle_nodes: int) -> ScaleOutcome:
        """Remove up to ``idle_nodes`` from the desired size, never below minSize.

        Which nodes go is up to the autoscaling group; drain them first (cordon + evict) so no lease is cut.
        """
        if idle_nodes < 0:
            raise ValueError("idle_nodes must not be negative")
        info = self.describe_nodegroup(cluster, name)
        target = max(info.scaling.min, info.scaling.desired - idle_nodes)
        outcome = self.scale_to(cluster, name, target)
        if not outcome.changed and idle_nodes > 0:
            outcome.reason = f"nodegroup {name} is at minSize={info.scaling.min}; nothing to scale down"
        return outcome


def _nodegroup_from_eks(raw: dict[str, Any]) -> NodegroupInfo:
    scaling = raw.get("scalingConfig") or {}
    return NodegroupInfo(
        cluster=raw["clusterName"],
        name=raw["nodegroupName"],
        status=raw.get("status"),
        instance_types=list(raw.get("instanceTypes") or []),
        capacity_type=raw.get("capacityType"),
        scaling=ScalingConfig(
            min=int(scaling.get("minSize", 0)),
            max=int(scaling.get("maxSize", 0)),
            desired=int(scaling.get("desiredSize", 0)),
        ),
        labels=dict(raw.get("labels") or {}),
        taints=[Taint.from_eks(t) for t in raw.get("taints") or []],
        subnets=list(raw.get("subnets") or []),
        ami_type=raw.get("amiType"),
        launch_template_id=(raw.get("launchTemplate") or {}).get("id"),
        tags=dict(raw.get("tags") or {}),
    )
