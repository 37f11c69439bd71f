"""`gpufabric eks import-eksctl` against moto: facts from EC2, --json shape, --apply creating nodegroups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controller.cli import app
from drivers.eks import AwsTarget, EksNodegroups, Taint
from tests.support.eks import NODE_ROLE, Cluster

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["eks", "import-eksctl", *args])


def test_json_with_facts_from_ec2(aws: AwsTarget) -> None:
    result = _run(str(FIXTURES / "gpu-cluster.yaml"), "--json", "--endpoint-url", str(aws.endpoint_url))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    by_name = {ng["name"]: ng for ng in doc["nodegroups"]}
    assert by_name["l4-train"]["gpus_per_node"] == 4 and by_name["l4-train"]["gpu_model"] == "L4"
    assert by_name["h100-block"]["gpus_per_node"] == 8 and by_name["h100-block"]["gpu_model"] == "H100"
    assert by_name["system"]["gpus_per_node"] == 0


def test_apply_creates_managed_nodegroups(aws: AwsTarget, cluster: Cluster, eks: Any, ec2: Any) -> None:
    args = [str(FIXTURES / "gpu-cluster.yaml"), "--apply", "--endpoint-url", str(aws.endpoint_url)]
    planned = _run(*args, "--dry-run", "--node-role", NODE_ROLE)
    assert planned.exit_code == 0, planned.output
    assert "planned" in planned.stdout
    assert eks.list_nodegroups(clusterName="fabric-train")["nodegroups"] == []

    created = _run(*args, "--node-role", NODE_ROLE)
    assert created.exit_code == 0, created.output
    nodegroups = EksNodegroups(eks, ec2)
    assert nodegroups.list_nodegroups("fabric-train") == ["h100-block", "infer-spot", "l4-train", "system"]

    l4 = nodegroups.describe_nodegroup("fabric-train", "l4-train")
    assert l4.instance_types == ["g6.12xlarge"]
    assert (l4.scaling.min, l4.scaling.desired, l4.scaling.max) == (0, 2, 4)
    assert l4.subnets == [cluster.subnets["us-east-1a"]]
    assert l4.labels == {"gpufabric.io/pool": "train", "gpufabric.io/placement-group": "fabric-l4-cluster"}
    assert l4.taints == [Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")]
    assert l4.launch_template_id is not None
    template = ec2.describe_launch_template_versions(LaunchTemplateId=l4.launch_template_id)
    data = template["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["Placement"]["GroupName"] == "fabric-l4-cluster"
    assert data["NetworkInterfaces"][0]["InterfaceType"] == "efa"
    assert data["CapacityReservationSpecification"]["CapacityReservationTarget"]["CapacityReservationId"] == (
        "cr-0123456789abcdef0"
    )

    block = nodegroups.describe_nodegroup("fabric-train", "h100-block")
    assert block.capacity_type == "CAPACITY_BLOCK"
    spot = nodegroups.describe_nodegroup("fabric-train", "infer-spot")
    assert spot.capacity_type == "SPOT" and spot.instance_types == ["g5.xlarge", "g6.xlarge"]

    again = _run(*args, "--node-role", NODE_ROLE)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("exists") == 4


def test_apply_without_a_role_says_which_field(aws: AwsTarget, cluster: Cluster) -> None:
    result = _run(str(FIXTURES / "gpu-cluster.yaml"), "--apply", "--endpoint-url", str(aws.endpoint_url))
    assert result.exit_code == 2
    assert "iam.instanceRoleARN" in result.output and "--node-role" in result.output


def test_apply_to_a_missing_cluster_fails_cleanly(aws: AwsTarget) -> None:
    result = _run(
        str(FIXTURES / "gpu-cluster.yaml"), "--apply", "--endpoint-url", str(aws.endpoint_url), "--node-role", NODE_ROLE
    )
    assert result.exit_code == 1
    assert "fabric-train" in result.output and "not found" in result.output


def test_self_managed_groups_are_skipped(aws: AwsTarget) -> None:
    eu = AwsTarget(region="eu-west-1", endpoint_url=aws.endpoint_url)
    ec2 = eu.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24", AvailabilityZone="eu-west-1a")["Subnet"]["SubnetId"]
    eu.client("eks").create_cluster(name="fabric-legacy", roleArn=NODE_ROLE, resourcesVpcConfig={"subnetIds": [subnet]})
    result = _run(
        str(FIXTURES / "self-managed.yaml"),
        "--apply",
        "--endpoint-url",
        str(aws.endpoint_url),
        "--node-role",
        NODE_ROLE,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("skipped") == 2
    assert eu.client("eks").list_nodegroups(clusterName="fabric-legacy")["nodegroups"] == []
