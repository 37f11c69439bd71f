"""Import an eksctl ``ClusterConfig`` (``eksctl.io/v1alpha5``) as an EKS backend: nodegroups with GPU facts.

Reads ``nodeGroups`` (self-managed) and ``managedNodeGroups``. Errors name the field
(``managedNodeGroups[1].taints[0].effect``). Defaults follow eksctl: a group without sizes gets
desiredCapacity 2, a missing minSize/maxSize takes the desired size, a group without an instance type
gets m5.large. A group without ``availabilityZones`` inherits the cluster-level list (eksctl places it
in the cluster's subnets); both absent gives ``[]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, Field

from drivers.eks.errors import EksctlConfigError, UnknownInstanceType
from drivers.eks.instance_gpus import TypeGpus, lookup_gpus
from drivers.eks.models import Taint
from drivers.eks.nodegroups import InstanceTypeCache

API_VERSION = "eksctl.io/v1alpha5"
EKSCTL_DEFAULT_INSTANCE_TYPE = "m5.large"
EKSCTL_DEFAULT_DESIRED = 2

CapacityType = Literal["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"]


class EksctlNodegroup(BaseModel):
    """One nodegroup as the file describes it (no AWS facts yet)."""

    name: str
    managed: bool
    instance_types: list[str]
    min: int
    max: int
    desired: int
    efa: bool = False
    capacity_type: CapacityType = "ON_DEMAND"
    spot: bool = False
    placement_group: str | None = None
    capacity_reservation_id: str | None = None
    capacity_reservation_resource_group: str | None = None
    capacity_reservation_preference: str | None = None
    availability_zones: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    instance_role_arn: str | None = None
    private_networking: bool = False


class EksctlCluster(BaseModel):
    name: str
    region: str | None
    version: str | None = None
    availability_zones: list[str] = Field(default_factory=list)
    nodegroups: list[EksctlNodegroup]


class EksNodegroupConfig(BaseModel):
    """A nodegroup with the facts placement needs; the ``--json`` summary is a subset of it."""

    name: str
    managed: bool
    instance_types: list[str]
    min: int
    max: int
    desired: int
    efa: bool
    gpus_per_node: int | None = Field(description="0 without GPUs; None when unknown or the types differ")
    gpu_model: str | None
    gpu_memory_mib: int | None = None
    efa_interfaces: int | None = Field(default=None, description="Max EFA interfaces of the type (if all agree)")
    capacity_type: CapacityType = "ON_DEMAND"
    spot: bool = False
    placement_group: str | None = None
    capacity_reservation_id: str | None = None
    capacity_reservation_resource_group: str | None = Field(
        default=None, description="ODCRs targeted through a resource group (its ARN) rather than one id"
    )
    availability_zones: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    facts_source: Literal["ec2:DescribeInstanceTypes", "builtin", "unknown"] = "unknown"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance_types": list(self.instance_types),
            "min": self.min,
            "max": self.max,
            "desired": self.desired,
            "efa": self.efa,
            "gpus_per_node": self.gpus_per_node,
            "gpu_model": self.gpu_model,
            "availability_zones": list(self.availability_zones),
            "labels": dict(self.labels),
            "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in self.taints],
            "capacity": {
                "type": self.capacity_kind,
                "reservation_id": self.capacity_reservation_id,
                "placement_group": self.placement_group,
            },
        }

    @property
    def capacity_kind(self) -> Literal["on-demand", "reservation", "capacity-block", "spot"]:
        """What the nodes run on: a Capacity Block, Spot, an ODCR (by id or resource group) or plain on-demand."""
        if self.capacity_type == "CAPACITY_BLOCK":
            return "capacity-block"
        if self.capacity_type == "SPOT":
            return "spot"
        if self.capacity_reservation_id or self.capacity_reservation_resource_group:
            return "reservation"
        return "on-demand"

    @property
    def has_gpus(self) -> bool:
        return bool(self.gpus_per_node)


class EksBackendConfig(BaseModel):
    """What the admin API stores for an EKS backend made from an eksctl file."""

    cluster: str = Field(min_length=1)
    region: str = Field(min_length=1)
    endpoint_url: str | None = Field(default=None, description="Override for tests (moto)")
    kubernetes_version: str | None = None
    nodegroups: list[EksNodegroupConfig] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``gpufabric eks import-eksctl --json`` document."""
        return {
            "cluster": self.cluster,
            "region": self.region,
            "nodegroups": [ng.summary() for ng in self.nodegroups],
        }

    @property
    def gpu_nodegroups(self) -> list[EksNodegroupConfig]:
        return [ng for ng in self.nodegroups if ng.has_gpus]


# -- parsing -----------------------------------------------------------------------------------


def load_eksctl(path: str | Path) -> EksctlCluster:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EksctlConfigError("", "no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EksctlConfigError("", f"cannot read: {exc}", str(path)) from None
    return parse_eksctl_text(text, source=str(path))


def parse_eksctl_text(text: str, source: str | None = None) -> EksctlCluster:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise EksctlConfigError("", f"not valid YAML: {exc}", source) from None
    if len(documents) != 1:
        raise EksctlConfigError("", f"expected one YAML document, found {len(documents)}", source)
    return parse_eksctl(documents[0], source)


def parse_eksctl(data: Any, source: str | None = None) -> EksctlCluster:
    p = _Reader(source)
    root = p.mapping(data, "")
    api_version = root.get("apiVersion")
    if api_version != API_VERSION:
        p.fail("apiVersion", f"must be {API_VERSION!r}, got {api_version!r}")
    if root.get("kind") != "ClusterConfig":
        p.fail("kind", f"must be 'ClusterConfig', got {root.get('kind')!r}")
    metadata = p.mapping(root.get("metadata"), "metadata")
    name = p.string(metadata.get("name"), "metadata.name", required=True)
    region = p.string(metadata.get("region"), "metadata.region")
    version = metadata.get("version")
    cluster_azs = p.string_list(root.get("availabilityZones"), "availabilityZones")

    groups: list[EksctlNodegroup] = []
    seen: dict[str, str] = {}
    for key, managed in (("nodeGroups", False), ("managedNodeGroups", True)):
        raw_list = root.get(key)
        if raw_list is None:
            continue
        if not isinstance(raw_list, list):
            p.fail(key, f"must be a list, got {type(raw_list).__name__}")
        for index, raw in enumerate(raw_list):
            where = f"{key}[{index}]"
            group = _parse_group(p, raw, where, managed, cluster_azs)
            if group.name in seen:
                p.fail(f"{where}.name", f"{group.name!r} is already used by {seen[group.name]}")
            seen[group.name] = where
            groups.append(group)
    return EksctlCluster(
        name=name or "",
        region=region,
        version=None if version is None else str(version),
        availability_zones=cluster_azs,
        nodegroups=groups,
    )


class _Reader:
    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, field: str, message: str) -> NoReturn:
        raise EksctlConfigError(field, message, self.source)

    def mapping(self, value: Any, field: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(field or "(document)", f"must be a mapping, got {type(value).__name__}")
        return dict(value)

    def string(self, value: Any, field: str, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.fail(field, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"must be a non-empty string, got {value!r}")
        return str(value)

    def integer(self, value: Any, field: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, got {value!r}")
        if value < 0:
            self.fail(field, f"must not be negative, got {value}")
        return int(value)

    def boolean(self, value: Any, field: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, got {value!r}")
        return bool(value)

    def string_list(self, value: Any, field: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(field, f"must be a list of strings, got {type(value).__name__}")
        out: list[str] = []
        for i, item in enumerate(value):
            out.append(self.string(item, f"{field}[{i}]", required=True) or "")
        return out

    def labels(self, value: Any, field: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, item in self.mapping(value, field).items():
            if not isinstance(item, str):
                self.fail(f"{field}.{key}", f"label values must be strings; quote it: {str(item).lower()!r}")
            out[str(key)] = item
        return out


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _parse_taints(p: _Reader, value: Any, field: str) -> list[Taint]:
    if value is None:
        return []
    taints: list[Taint] = []
    if isinstance(value, Mapping):
        # Old map form: {key: "value:Effect"} (value may be empty: ":NoSchedule").
        for key, spec in value.items():
            where = f"{field}.{key}"
            if not isinstance(spec, str) or ":" not in spec:
                p.fail(where, f"map-form taints are 'value:Effect' (e.g. 'true:NoSchedule'), got {spec!r}")
            taint_value, _, effect = str(spec).rpartition(":")
            if effect not in _EFFECTS:
                p.fail(where, f"effect must be one of {', '.join(_EFFECTS)}, got {effect!r}")
            taints.append(Taint(key=str(key), value=taint_value or None, effect=effect))  # type: ignore[arg-type]
        return taints
    if not isinstance(value, list):
        p.fail(field, f"must be a list of {{key, value, effect}} or a map, got {type(value).__name__}")
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        raw = p.mapping(item, where)
        key = p.string(raw.get("key"), f"{where}.key", required=True)
        raw_value = raw.get("value")
        if raw_value is not None and not isinstance(raw_value, str):
            p.fail(f"{where}.value", f"must be a string; quote it: {str(raw_value).lower()!r}")
        raw_effect = raw.get("effect")
        if raw_effect not in _EFFECTS:
            p.fail(f"{where}.effect", f"must be one of {', '.join(_EFFECTS)}, got {raw_effect!r}")
        taints.append(Taint(key=key or "", value=raw_value or None, effect=raw_effect))
    return taints


def _parse_group(p: _Reader, raw_value: Any, where: str, managed: bool, cluster_azs: list[str]) -> EksctlNodegroup:
    raw = p.mapping(raw_value, where)
    if not raw:
        p.fail(where, "empty nodegroup")
    name = p.string(raw.get("name"), f"{where}.name", required=True) or ""

    distribution = p.mapping(raw.get("instancesDistribution"), f"{where}.instancesDistribution")
    single = p.string(raw.get("instanceType"), f"{where}.instanceType")
    listed = p.string_list(raw.get("instanceTypes"), f"{where}.instanceTypes")  # managed groups only
    distributed = p.string_list(distribution.get("instanceTypes"), f"{where}.instancesDistribution.instanceTypes")
    sources = [s for s in (bool(single), bool(listed), bool(distributed)) if s]
    if len(sources) > 1:
        p.fail(
            where,
            "set only one of instanceType, instanceTypes and instancesDistribution.instanceTypes",
        )
    if distribution and not distributed:
        p.fail(f"{where}.instancesDistribution.instanceTypes", "is required when instancesDistribution is set")
    instance_types = [single] if single else (listed or distributed or [EKSCTL_DEFAULT_INSTANCE_TYPE])

    desired = p.integer(raw.get("desiredCapacity"), f"{where}.desiredCapacity")
    minimum = p.integer(raw.get("minSize"), f"{where}.minSize")
    maximum = p.integer(raw.get("maxSize"), f"{where}.maxSize")
    if desired is None:
        desired = minimum if minimum is not None else EKSCTL_DEFAULT_DESIRED
        if maximum is not None:
            desired = min(desired, maximum)
    if minimum is None:
        minimum = min(desired, maximum) if maximum is not None else desired
    if maximum is None:
        maximum = max(desired, minimum)
    if minimum > maximum:
        p.fail(f"{where}.minSize", f"minSize {minimum} is greater than maxSize {maximum}")
    if not minimum <= desired <= maximum:
        p.fail(f"{where}.desiredCapacity", f"desiredCapacity {desired} is outside minSize {minimum}..maxSize {maximum}")

    placement = p.mapping(raw.get("placement"), f"{where}.placement")
    placement_group = p.string(placement.get("groupName"), f"{where}.placement.groupName")
    reservation = p.mapping(raw.get("capacityReservation"), f"{where}.capacityReservation")
    target = p.mapping(
        reservation.get("capacityReservationTarget"), f"{where}.capacityReservation.capacityReservationTarget"
    )
    reservation_id = p.string(
        target.get("capacityReservationID"),
        f"{where}.capacityReservation.capacityReservationTarget.capacityReservationID",
    )
    resource_group = p.string(
        target.get("capacityReservationResourceGroupARN"),
        f"{where}.capacityReservation.capacityReservationTarget.capacityReservationResourceGroupARN",
    )
    if reservation_id and resource_group:
        p.fail(
            f"{where}.capacityReservation.capacityReservationTarget",
            "give capacityReservationID or capacityReservationResourceGroupARN, not both",
        )
    preference = p.string(
        reservation.get("capacityReservationPreference"), f"{where}.capacityReservation.capacityReservationPreference"
    )

    market = p.mapping(raw.get("instanceMarketOptions"), f"{where}.instanceMarketOptions")
    market_type = market.get("marketType")
    if market_type is not None and market_type not in ("capacity-block", "spot"):
        p.fail(f"{where}.instanceMarketOptions.marketType", f"must be 'capacity-block' or 'spot', got {market_type!r}")
    spot = p.boolean(raw.get("spot"), f"{where}.spot") or market_type == "spot"
    on_demand_pct = p.integer(
        distribution.get("onDemandPercentageAboveBaseCapacity"),
        f"{where}.instancesDistribution.onDemandPercentageAboveBaseCapacity",
    )
    if on_demand_pct is not None and on_demand_pct < 100:
        spot = True
    capacity_type: CapacityType = "ON_DEMAND"
    if market_type == "capacity-block":
        if spot:
            p.fail(f"{where}.instanceMarketOptions.marketType", "a capacity-block group cannot also use spot")
        capacity_type = "CAPACITY_BLOCK"
    elif spot and (on_demand_pct is None or on_demand_pct == 0):
        capacity_type = "SPOT"

    iam = p.mapping(raw.get("iam"), f"{where}.iam")
    group_azs = p.string_list(raw.get("availabilityZones"), f"{where}.availabilityZones")
    return EksctlNodegroup(
        name=name,
        managed=managed,
        instance_types=instance_types,
        min=minimum,
        max=maximum,
        desired=desired,
        efa=p.boolean(raw.get("efaEnabled"), f"{where}.efaEnabled"),
        capacity_type=capacity_type,
        spot=spot,
        placement_group=placement_group,
        capacity_reservation_id=reservation_id,
        capacity_reservation_resource_group=resource_group,
        capacity_reservation_preference=preference,
        availability_zones=group_azs or list(cluster_azs),
        labels=p.labels(raw.get("labels"), f"{where}.labels"),
        taints=_parse_taints(p, raw.get("taints"), f"{where}.taints"),
        instance_role_arn=p.string(iam.get("instanceRoleARN"), f"{where}.iam.instanceRoleARN"),
        private_networking=p.boolean(raw.get("privateNetworking"), f"{where}.privateNetworking"),
    )


# -- facts -------------------------------------------------------------------------------------


def to_backend_config(
    cluster: EksctlCluster,
    ec2: Any | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    cache: InstanceTypeCache | None = None,
) -> EksBackendConfig:
    """Attach GPU facts to every nodegroup. ``region`` overrides ``metadata.region``."""
    chosen_region = region or cluster.region
    if not chosen_region:
        raise EksctlConfigError("metadata.region", "is required (or pass a region)")
    all_types = [t for ng in cluster.nodegroups for t in ng.instance_types]
    try:
        gpus = lookup_gpus(all_types, ec2, cache) if all_types else {}
    except UnknownInstanceType as exc:
        raise EksctlConfigError("instanceType", str(exc)) from None
    nodegroups = [_with_facts(ng, [gpus.get(t) for t in ng.instance_types]) for ng in cluster.nodegroups]
    return EksBackendConfig(
        cluster=cluster.name,
        region=chosen_region,
        endpoint_url=endpoint_url,
        kubernetes_version=cluster.version,
        nodegroups=nodegroups,
    )


def _with_facts(ng: EksctlNodegroup, facts: list[TypeGpus | None]) -> EksNodegroupConfig:
    known = [f for f in facts if f is not None]
    complete = len(known) == len(facts) and bool(known)

    def agreed(values: list[Any]) -> Any:
        return values[0] if complete and len(set(values)) == 1 else None

    gpus = agreed([f.gpu_count for f in known])
    sources = {f.source for f in known}
    return EksNodegroupConfig(
        name=ng.name,
        managed=ng.managed,
        instance_types=ng.instance_types,
        min=ng.min,
        max=ng.max,
        desired=ng.desired,
        efa=ng.efa,
        gpus_per_node=gpus,
        gpu_model=agreed([f.gpu_model for f in known]) if gpus else None,
        gpu_memory_mib=agreed([f.gpu_memory_mib for f in known]) if gpus else None,
        efa_interfaces=agreed([f.efa_interfaces for f in known]),
        capacity_type=ng.capacity_type,
        spot=ng.spot,
        placement_group=ng.placement_group,
        capacity_reservation_id=ng.capacity_reservation_id,
        capacity_reservation_resource_group=ng.capacity_reservation_resource_group,
        availability_zones=ng.availability_zones,
        labels=ng.labels,
        taints=ng.taints,
        facts_source=(sources.pop() if complete and len(sources) == 1 else "unknown"),  # type: ignore[arg-type]
    )


def import_eksctl(
    path: str | Path,
    ec2: Any | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> EksBackendConfig:
    """Read an eksctl file and return the backend config (no AWS changes)."""
    return to_backend_config(load_eksctl(path), ec2=ec2, region=region, endpoint_url=endpoint_url)
