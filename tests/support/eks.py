"""Fixtures for EKS tests: a moto server (EKS + EC2 over HTTP) and a Kubernetes API emulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devservices.aws_double import AwsDouble
from devservices.kube_emulator import KubeEmulator
from devservices.moto_server import DUMMY_CREDENTIALS, MotoServer
from drivers.eks import AwsTarget, EksNodegroups, InstanceTypeCache
from drivers.eks.kube import KubeGpuCluster, kube_configuration

REGION = "us-east-1"
ACCOUNT = "123456789012"
NODE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/gpufabric-nodes"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(log_dir=tmp_path_factory.mktemp("moto")) as server:
        # moto builds a region's EC2 backend (default VPC, AMIs) on first use, ~2 s: pay it once here.
        import boto3

        boto3.client(
            "ec2", region_name=REGION, endpoint_url=server.url, aws_access_key_id="x", aws_secret_access_key="x"
        ).describe_vpcs()
        yield server


@pytest.fixture(scope="session")
def aws_double(moto_server: MotoServer) -> Iterator[AwsDouble]:
    """The project's AWS test double in front of moto: the EC2 calls moto lacks are answered by it."""
    double = AwsDouble(moto_server.url, region=REGION).start()
    yield double
    double.stop()


@pytest.fixture
def aws(moto_server: MotoServer, aws_double: AwsDouble, monkeypatch: pytest.MonkeyPatch) -> AwsTarget:
    """A clean moto account behind the AWS double; boto3 in this process and in CLI runs uses dummy credentials."""
    moto_server.reset()
    aws_double.reset_state()
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return AwsTarget(region=REGION, endpoint_url=aws_double.url)


@pytest.fixture
def eks(aws: AwsTarget) -> Any:
    return aws.client("eks")


@pytest.fixture
def ec2(aws: AwsTarget) -> Any:
    return aws.client("ec2")


@pytest.fixture
def nodegroups(eks: Any, ec2: Any) -> EksNodegroups:
    return EksNodegroups(eks, ec2, InstanceTypeCache())


@dataclass
class Cluster:
    name: str
    vpc_id: str
    subnets: dict[str, str]  # AZ -> subnet id


@pytest.fixture
def cluster(eks: Any, ec2: Any) -> Cluster:
    """An EKS cluster in a VPC with one /24 subnet in each of two AZs."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = {}
    for i, zone in enumerate(("us-east-1a", "us-east-1b")):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"]
        subnets[zone] = subnet["SubnetId"]
    eks.create_cluster(
        name="fabric-train",
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks-cluster",
        resourcesVpcConfig={"subnetIds": list(subnets.values())},
    )
    return Cluster("fabric-train", vpc, subnets)


def create_gpu_nodegroup(
    eks: Any,
    cluster: Cluster,
    name: str = "l4-train",
    instance_type: str = "g6.12xlarge",
    min_size: int = 0,
    desired: int = 1,
    max_size: int = 2,
    zones: tuple[str, ...] = ("us-east-1a",),
    labels: dict[str, str] | None = None,
) -> None:
    eks.create_nodegroup(
        clusterName=cluster.name,
        nodegroupName=name,
        subnets=[cluster.subnets[z] for z in zones],
        nodeRole=NODE_ROLE,
        instanceTypes=[instance_type],
        scalingConfig={"minSize": min_size, "maxSize": max_size, "desiredSize": desired},
        labels=labels or {"gpufabric.io/pool": "train"},
        taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
    )


def register_instances(double: AwsDouble, nodes: list[dict[str, Any]], per_leaf: int = 2) -> dict[str, list[str]]:
    """Make the EC2 instances behind emulator nodes known to the double, with network nodes that put each
    ``per_leaf`` instances (in node-name order) under one layer-3 node, two leaves per layer-2 node, one
    layer-1 node per zone. Returns node name -> its network nodes."""
    out: dict[str, list[str]] = {}
    instances = []
    for i, node in enumerate(sorted(nodes, key=lambda n: n["metadata"]["name"])):
        labels = node["metadata"]["labels"]
        zone = labels["topology.kubernetes.io/zone"]
        leaf = i // per_leaf
        network = [f"nn-{zone}-spine", f"nn-{zone}-block{leaf // 2}", f"nn-{zone}-leaf{leaf}"]
        out[node["metadata"]["name"]] = network
        instances.append(
            {
                "instance_id": node["spec"]["providerID"].rsplit("/", 1)[1],
                "instance_type": labels["node.kubernetes.io/instance-type"],
                "availability_zone": zone,
                "network_nodes": network,
            }
        )
    double.add_instances(instances)
    return out


@pytest.fixture(scope="session")
def kube_emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kube(kube_emulator: KubeEmulator) -> Iterator[KubeEmulator]:
    kube_emulator.reset()
    yield kube_emulator


@pytest.fixture
def kube_cluster(kube: KubeEmulator) -> Iterator[KubeGpuCluster]:
    gpu_cluster = KubeGpuCluster.from_configuration(kube_configuration(kube.url))
    yield gpu_cluster
    gpu_cluster.close()


# The controller fixtures (SQLite and PostgreSQL) for the end-to-end lease tests.
from tests.support.controller import controller, database_url, migrated_db  # noqa: E402, F401
