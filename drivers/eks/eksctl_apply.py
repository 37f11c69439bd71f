"""Applying imported eksctl nodegroups to EKS: the plan per nodegroup (create, update, unchanged) and its launch
template (capacity reservation targeting, EFA, placement group), then the boto3 calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from drivers.eks.aws import call
from drivers.eks.eksctl import EksBackendConfig, EksNodegroupConfig
from drivers.eks.errors import EksctlConfigError
from drivers.eks.models import PLACEMENT_GROUP_LABEL
from drivers.eks.nodegroups import EksNodegroups, NodegroupCreate, ScalingConfig


class ApplyResult(BaseModel):
    nodegroup: str
    action: Literal["created", "exists", "skipped", "planned"]
    detail: str = ""
    launch_template_id: str | None = None


def plan_nodegroup(
    ng: EksNodegroupConfig, cluster_subnets: list[str], subnet_zones: dict[str, str], node_role: str | None
) -> NodegroupCreate:
    """The ``create_nodegroup`` request for one imported group (raises :class:`EksctlConfigError` if impossible)."""
    role = node_role
    if not role:
        raise EksctlConfigError(
            f"{ng.name}.iam.instanceRoleARN", "no node role: set it in the file or pass --node-role"
        )
    subnets = cluster_subnets
    if ng.availability_zones and subnet_zones:
        subnets = [s for s in cluster_subnets if subnet_zones.get(s) in ng.availability_zones]
        if not subnets:
            raise EksctlConfigError(
                f"{ng.name}.availabilityZones",
                f"the cluster has no subnet in {', '.join(ng.availability_zones)}",
            )
    if not subnets:
        raise EksctlConfigError(f"{ng.name}", "the cluster has no subnets to place the nodegroup in")
    labels = dict(ng.labels)
    if ng.placement_group:
        # Lets a pod spec ask for the placement group by node affinity (EKS sets no such label itself).
        labels.setdefault(PLACEMENT_GROUP_LABEL, ng.placement_group)
    return NodegroupCreate(
        name=ng.name,
        instance_types=ng.instance_types,
        scaling=ScalingConfig(min=ng.min, max=ng.max, desired=ng.desired),
        subnets=subnets,
        node_role=role,
        capacity_type=ng.capacity_type,
        labels=labels,
        taints=ng.taints,
        tags={"gpufabric.io/imported-from": "eksctl"},
    )


def launch_template_data(ng: EksNodegroupConfig) -> dict[str, Any] | None:
    """EC2 launch-template data for what ``create_nodegroup`` cannot say itself (EFA, placement, reservations)."""
    data: dict[str, Any] = {}
    if ng.efa:
        count = max(1, ng.efa_interfaces or 1)
        # One EFA per network card; card 0 carries the primary interface.
        data["NetworkInterfaces"] = [
            {"DeviceIndex": 0 if card == 0 else 1, "NetworkCardIndex": card, "InterfaceType": "efa"}
            for card in range(count)
        ]
    if ng.placement_group:
        data["Placement"] = {"GroupName": ng.placement_group}
    if ng.capacity_reservation_id:
        data["CapacityReservationSpecification"] = {
            "CapacityReservationTarget": {"CapacityReservationId": ng.capacity_reservation_id}
        }
    elif ng.capacity_reservation_resource_group:
        data["CapacityReservationSpecification"] = {
            "CapacityReservationTarget": {"CapacityReservationResourceGroupArn": ng.capacity_reservation_resource_group}
        }
    if ng.capacity_type == "CAPACITY_BLOCK":
        data["InstanceMarketOptions"] = {"MarketType": "capacity-block"}
    return data or None


def apply_nodegroups(
    config: EksBackendConfig,
    nodegroups: EksNodegroups,
    node_role: str | None = None,
    roles: Mapping[str, str | None] | None = None,
    dry_run: bool = False,
) -> list[ApplyResult]:
    """Create the managed nodegroups that do not exist yet. Self-managed ``nodeGroups`` are skipped:
    they are CloudFormation autoscaling groups that eksctl creates, not EKS API objects."""
    cluster = nodegroups.describe_cluster(config.cluster)
    existing = set(nodegroups.list_nodegroups(config.cluster))
    subnet_zones: dict[str, str] = {}
    if nodegroups.ec2 is not None and cluster.subnet_ids:
        response = nodegroups.ec2.describe_subnets(SubnetIds=cluster.subnet_ids)
        subnet_zones = {s["SubnetId"]: s["AvailabilityZone"] for s in response.get("Subnets", [])}
    results: list[ApplyResult] = []
    for ng in config.nodegroups:
        if not ng.managed:
            results.append(ApplyResult(nodegroup=ng.name, action="skipped", detail="self-managed group: use eksctl"))
            continue
        if ng.name in existing:
            results.append(ApplyResult(nodegroup=ng.name, action="exists"))
            continue
        role = node_role or (roles or {}).get(ng.name)
        spec = plan_nodegroup(ng, cluster.subnet_ids, subnet_zones, role)
        template = launch_template_data(ng)
        if dry_run:
            detail = f"{ng.desired} x {','.join(ng.instance_types)} in {len(spec.subnets)} subnet(s)"
            results.append(ApplyResult(nodegroup=ng.name, action="planned", detail=detail))
            continue
        template_id = None
        if template is not None:
            if nodegroups.ec2 is None:
                raise EksctlConfigError(ng.name, "EFA, placement groups and reservations need an EC2 client")
            created = call(
                "ec2:CreateLaunchTemplate",
                lambda template=template, ng=ng: nodegroups.ec2.create_launch_template(  # type: ignore[misc]
                    LaunchTemplateName=f"gpufabric-{config.cluster}-{ng.name}", LaunchTemplateData=template
                ),
            )
            template_id = created["LaunchTemplate"]["LaunchTemplateId"]
            spec.launch_template_id = template_id
        nodegroups.create_nodegroup(config.cluster, spec)
        results.append(ApplyResult(nodegroup=ng.name, action="created", launch_template_id=template_id))
    return results
