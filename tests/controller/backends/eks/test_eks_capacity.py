"""Capacity in the EKS lease flow, through the REST API: an On-Demand Capacity Reservation consumed by the leases
that scale its nodegroup up (and refused with its figures when full), an EFA nodegroup's cluster placement group
created on the first scale-up, a Capacity Block whose end bounds the leases on it, all seen in the checks; a Spot
nodegroup scaled by maxSize alone (on-demand: test_eks_leases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli import app as cli_app
from devservices.aws_double import AwsDouble
from devservices.kube_emulator import KubeEmulator, materialize_nodegroup
from drivers.eks import AwsTarget, EksNodegroups
from tests.support.controller import Controller
from tests.support.eks import REGION, Cluster, create_gpu_nodegroup

pytestmark = pytest.mark.integration

WHOLE_NODE = {"slices": [{"kind": "gpu", "count": 8, "model": "H100"}], "topology": "same-host"}


def register(controller: Controller, aws: AwsTarget, kube: KubeEmulator, tmp_path: Path, group: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": "fabric-train", "region": REGION},
        "managedNodeGroups": [
            {"instanceType": "p5.48xlarge", "minSize": 0, "availabilityZones": ["us-east-1a"], **group}
        ],
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(
        cli_app,
        [
            "eks", "import-eksctl", str(path), "--endpoint-url", str(aws.endpoint_url),
            "--register", "--controller", controller.url, "--token", controller.admin_token,
            "--name", "eks-train", "--kube-api-url", kube.url,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def sync(api: Any) -> dict[str, Any]:
    response = api.post("/v1/backends/eks-train/sync")
    assert response.status_code == 200, response.text
    assert response.json()["errors"] == [], response.json()
    return dict(response.json())


def capacity(api: Any, nodegroup: str) -> dict[str, Any]:
    response = api.get("/v1/backends/eks-train/checks")
    assert response.status_code == 200, response.text
    (entry,) = [g for g in response.json()["nodegroups"] if g["nodegroup"] == nodegroup]
    return dict(entry["capacity"])


def lease(tenant: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The lease as created: 201 ready, 202 not yet, 409 lease-failed (the stored lease is in the problem)."""
    response = tenant.post("/v1/leases", json=body)
    out: dict[str, Any] = response.json()
    if response.status_code == 409 and out.get("type", "").endswith("/lease-failed"):
        return dict(out["lease"])
    assert response.status_code == (201 if out.get("state") == "ready" else 202), response.text
    return out


def test_a_reservation_is_consumed_by_leases_and_refuses_with_its_figures_when_full(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    ec2: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    reservation = ec2.create_capacity_reservation(
        InstanceType="p5.48xlarge",
        InstancePlatform="Linux/UNIX",
        AvailabilityZone="us-east-1a",
        InstanceCount=2,
        InstanceMatchCriteria="targeted",
    )["CapacityReservation"]["CapacityReservationId"]
    create_gpu_nodegroup(eks, cluster, "p5-odcr", instance_type="p5.48xlarge", desired=1, max_size=3)
    materialize_nodegroup(kube, nodegroups, cluster.name, "p5-odcr", REGION)
    aws_double.capacity.consume(reservation, 1)  # EC2 counts the running instance against the reservation
    register(
        controller,
        aws,
        kube,
        tmp_path,
        {
            "name": "p5-odcr",
            "desiredCapacity": 1,
            "maxSize": 3,
            "efaEnabled": True,
            "placement": {"groupName": "p5-cluster"},
            "capacityReservation": {"capacityReservationTarget": {"capacityReservationID": reservation}},
        },
    )
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        sync(api)
        before = capacity(api, "p5-odcr")
        assert before["type"] == "reservation"
        assert {k: before["reservation"][k] for k in ("id", "kind", "total", "used", "available", "launching")} == {
            "id": reservation, "kind": "odcr", "total": 2, "used": 1, "available": 1, "launching": 0,
        }  # fmt: skip
        assert before["placement_group"]["state"] == "missing"  # not created until a node is needed

        assert lease(tenant, WHOLE_NODE)["state"] == "ready"
        second = lease(tenant, WHOLE_NODE)  # headroom: one more node, launched into the reservation
        assert second["state"] == "provisioning", second
        assert nodegroups.describe_nodegroup(cluster.name, "p5-odcr").scaling.desired == 2
        during = capacity(api, "p5-odcr")
        assert (during["reservation"]["launching"], during["reservation"]["free"]) == (1, 0)
        assert during["placement_group"] == {"name": "p5-cluster", "strategy": "cluster", "state": "available"}

        third = lease(tenant, WHOLE_NODE)  # maxSize would allow it; the reservation does not
        assert third["state"] == "failed", third
        assert f"capacity reservation {reservation} has 0 of 2 instances free, 1 launching" in third["reason"]
        assert nodegroups.describe_nodegroup(cluster.name, "p5-odcr").scaling.desired == 2

        # The node comes up in the reservation; the waiting lease moves onto it.
        materialize_nodegroup(kube, nodegroups, cluster.name, "p5-odcr", REGION)
        aws_double.capacity.consume(reservation, 1)
        sync(api)
        assert tenant.get(f"/v1/leases/{second['id']}").json()["state"] == "ready"
        after = capacity(api, "p5-odcr")["reservation"]
        assert (after["used"], after["available"], after["launching"]) == (2, 0, 0)
        groups = [a for a, p in aws_double.calls if a == "CreatePlacementGroup"]
        assert groups == ["CreatePlacementGroup"]  # created once, then reused


def test_leases_on_a_capacity_block_end_before_the_block_does(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    ec2: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    aws_double.control(
        "offerings",
        {
            "instance_type": "p5.48xlarge",
            "availability_zone": "us-east-1a",
            "instance_count": 2,
            "start": start.isoformat(),
            "duration_hours": 24,
        },
    )
    (offering,) = ec2.describe_capacity_block_offerings(
        InstanceType="p5.48xlarge", InstanceCount=2, CapacityDurationHours=24
    )["CapacityBlockOfferings"]
    block = ec2.purchase_capacity_block(
        CapacityBlockOfferingId=offering["CapacityBlockOfferingId"], InstancePlatform="Linux/UNIX"
    )["CapacityReservation"]["CapacityReservationId"]
    create_gpu_nodegroup(eks, cluster, "p5-block", instance_type="p5.48xlarge", desired=1, max_size=2)
    materialize_nodegroup(kube, nodegroups, cluster.name, "p5-block", REGION)
    aws_double.capacity.consume(block, 1)
    register(
        controller,
        aws,
        kube,
        tmp_path,
        {
            "name": "p5-block",
            "desiredCapacity": 1,
            "maxSize": 2,
            "instanceMarketOptions": {"marketType": "capacity-block"},
            "capacityReservation": {"capacityReservationTarget": {"capacityReservationID": block}},
        },
    )
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        sync(api)
        checks = capacity(api, "p5-block")
        assert checks["type"] == "capacity-block" and checks["reservation"]["kind"] == "capacity-block"
        assert checks["reservation"]["state"] == "active"
        assert checks["reservation"]["start"].startswith(start.isoformat()[:16])
        assert checks["reservation"]["end"].startswith((start + timedelta(hours=24)).isoformat()[:16])

        hosts = api.get("/v1/hosts").json()
        end = checks["reservation"]["end"]
        assert {h["labels"].get("gpufabric.dev/usable-until") for h in hosts} == {end}  # node and headroom

        # Placement refuses what would outlast the block, naming it; nothing is stored or started.
        too_long = tenant.post("/v1/leases", json={**WHOLE_NODE, "duration": 2 * 24 * 3600})
        assert too_long.status_code == 409, too_long.text
        (window,) = [f for f in too_long.json()["filters"] if f["filter"] == "capacity-window"]
        assert window["removed_hosts"] == 2
        assert "a lease of 48.0 h would end after it" in window["reasons"][0]  # tenants see reasons, no hosts
        open_ended = tenant.post("/v1/leases", json=WHOLE_NODE)
        assert open_ended.status_code == 409 and "needs a duration that ends before then" in open_ended.text
        assert tenant.get("/v1/leases").json() == []
        assert nodegroups.describe_nodegroup(cluster.name, "p5-block").scaling.desired == 1  # nothing started

        inside = lease(tenant, {**WHOLE_NODE, "duration": 4 * 3600})
        assert inside["state"] == "ready", inside
        assert inside["result"]["nodes"][0]["nodegroup"] == "p5-block"


def test_a_spot_nodegroup_scales_by_max_size_alone_and_ignores_block_ends(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    eks.create_nodegroup(
        clusterName=cluster.name,
        nodegroupName="p5-spot",
        subnets=[cluster.subnets["us-east-1a"]],
        nodeRole="arn:aws:iam::123456789012:role/gpufabric-nodes",
        instanceTypes=["p5.48xlarge"],
        capacityType="SPOT",
        scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 1},
    )
    materialize_nodegroup(kube, nodegroups, cluster.name, "p5-spot", REGION)
    register(controller, aws, kube, tmp_path, {"name": "p5-spot", "desiredCapacity": 1, "maxSize": 2, "spot": True})
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        sync(api)
        assert capacity(api, "p5-spot") == {"type": "spot", "reservation": None, "placement_group": None}
        assert lease(tenant, WHOLE_NODE)["state"] == "ready"
        assert lease(tenant, {**WHOLE_NODE, "duration": 30 * 24 * 3600})["state"] == "provisioning"  # no block end
        assert nodegroups.describe_nodegroup(cluster.name, "p5-spot").scaling.desired == 2
        sync(api)  # at maxSize one headroom host remains, for the figures
        full = lease(tenant, WHOLE_NODE)
        assert full["state"] == "failed" and "maxSize=2" in full["reason"], full
    assert not [a for a, _ in aws_double.calls if a in ("DescribeCapacityReservations", "CreatePlacementGroup")]


def test_a_reservation_resource_group_counts_its_reservations_in_checks_and_scale_ups(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    ec2: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    """Two p5 ODCRs in us-east-1a (1 of 2 and 1 of 1 free) and a g6 one in a capacity reservation group: the group
    holds 2 free p5 instances; the g6 reservation does not count for a p5 nodegroup."""

    def reserve(instance_type: str, count: int) -> dict[str, Any]:
        return dict(
            ec2.create_capacity_reservation(
                InstanceType=instance_type,
                InstancePlatform="Linux/UNIX",
                AvailabilityZone="us-east-1a",
                InstanceCount=count,
                InstanceMatchCriteria="targeted",
            )["CapacityReservation"]
        )

    p5_a, p5_b, g6 = reserve("p5.48xlarge", 2), reserve("p5.48xlarge", 1), reserve("g6.12xlarge", 4)
    groups = aws.client("resource-groups")
    group_arn = groups.create_group(
        Name="p5-pool",
        Configuration=[
            {"Type": "AWS::EC2::CapacityReservationPool"},
            {
                "Type": "AWS::ResourceGroups::Generic",
                "Parameters": [
                    {"Name": "allowed-resource-types", "Values": ["AWS::EC2::CapacityReservation"]},
                ],
            },
        ],
    )["Group"]["GroupArn"]
    added = groups.group_resources(
        Group=group_arn,
        ResourceArns=[r["CapacityReservationArn"] for r in (p5_a, p5_b, g6)]
        + ["arn:aws:ec2:us-east-1:123456789012:capacity-reservation/cr-00000000000000bad"],
    )
    assert len(added["Succeeded"]) == 3
    assert added["Failed"][0]["ErrorCode"] == "InvalidCapacityReservationId.NotFound"
    listed = groups.list_group_resources(Group="p5-pool", MaxResults=2)  # pages like AWS
    assert len(listed["Resources"]) == 2 and listed["NextToken"]

    create_gpu_nodegroup(eks, cluster, "p5-pool", instance_type="p5.48xlarge", desired=1, max_size=4)
    materialize_nodegroup(kube, nodegroups, cluster.name, "p5-pool", REGION)
    aws_double.capacity.consume(p5_a["CapacityReservationId"], 1)  # the running node
    register(
        controller,
        aws,
        kube,
        tmp_path,
        {
            "name": "p5-pool",
            "desiredCapacity": 1,
            "maxSize": 4,
            "capacityReservation": {"capacityReservationTarget": {"capacityReservationResourceGroupARN": group_arn}},
        },
    )
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        sync(api)
        before = capacity(api, "p5-pool")
        assert before["type"] == "reservation" and before["reservation"] is None
        pooled = before["reservation_group"]
        assert {k: pooled[k] for k in ("resource_group", "kind", "total", "used", "available", "launching", "free")} == {
            "resource_group": group_arn, "kind": "odcr-group", "total": 3, "used": 1, "available": 2,
            "launching": 0, "free": 2,
        }  # fmt: skip
        assert pooled["by_instance_type_az"] == [
            {"instance_type": "g6.12xlarge", "availability_zone": "us-east-1a", "reservations": 1,
             "total": 4, "used": 0, "available": 4},
            {"instance_type": "p5.48xlarge", "availability_zone": "us-east-1a", "reservations": 2,
             "total": 3, "used": 1, "available": 2},
        ]  # fmt: skip

        assert lease(tenant, WHOLE_NODE)["state"] == "ready"  # the running node
        waiting = [lease(tenant, WHOLE_NODE) for _ in range(2)]  # two new nodes: the group's two free instances
        assert [w["state"] for w in waiting] == ["provisioning", "provisioning"], waiting
        assert nodegroups.describe_nodegroup(cluster.name, "p5-pool").scaling.desired == 3
        full = lease(tenant, WHOLE_NODE)  # maxSize 4 would allow it; the group does not
        assert full["state"] == "failed", full
        assert (
            f"capacity reservation group {group_arn} has 0 of 3 p5.48xlarge in us-east-1a instances free in "
            "2 reservation(s), 2 launching for the nodegroup; 1 requested"
        ) in full["reason"]
        assert capacity(api, "p5-pool")["reservation_group"]["launching"] == 2
