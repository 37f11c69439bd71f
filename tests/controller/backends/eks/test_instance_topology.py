"""EC2 instance topology into host labels: the EKS sync asks DescribeInstanceTopology (the AWS double) for the
GPU nodes that carry no network-node labels, remembers the answer, and network-node gangs are placed and refused
through the lease API on those labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller.backends.eks.config import EksConfig
from controller.backends.eks.topology import EMPTY_RETRY_S, node_topology_labels
from controller.cli import app as cli_app
from devservices.aws_double import AwsDouble
from devservices.kube_emulator import KubeEmulator, materialize_nodegroup
from drivers.eks import AwsTarget, EksNodegroups
from drivers.eks.errors import AwsCallFailed
from drivers.eks.kube_models import KubeGpuHost
from drivers.eks.topology import describe_instance_topology
from tests.support.controller import Controller
from tests.support.eks import REGION, Cluster, create_gpu_nodegroup, register_instances

pytestmark = pytest.mark.integration

LAYERS = [f"topology.k8s.aws/network-node-layer-{i}" for i in (1, 2, 3)]
GANG = {"slices": [{"kind": "gpu", "count": 8, "model": "H100"}]}


def register_backend(controller: Controller, aws: AwsTarget, kube: KubeEmulator, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": "fabric-train", "region": REGION},
        "managedNodeGroups": [
            {
                "name": "h100-train",
                "instanceType": "p5.48xlarge",
                "minSize": 0,
                "desiredCapacity": 5,
                "maxSize": 5,
                "availabilityZones": ["us-east-1a"],
            }
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
    report: dict[str, Any] = response.json()
    assert report["errors"] == [], report
    return report


def test_sync_labels_hosts_from_instance_topology_and_gangs_use_them(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    create_gpu_nodegroup(eks, cluster, "h100-train", instance_type="p5.48xlarge", desired=5, max_size=5)
    nodes = materialize_nodegroup(kube, nodegroups, cluster.name, "h100-train", REGION, network_labels=False)
    assert not any(k in n["metadata"]["labels"] for n in nodes for k in LAYERS)
    # Leaves of 2: leaf0 = nodes 0-1, leaf1 = 2-3 (both under block0), leaf2 = node 4 (block1).
    network = register_instances(aws_double, nodes, per_leaf=2)
    register_backend(controller, aws, kube, tmp_path)
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        report = sync(api)
        assert report["instance_topology"] == {"asked": 5, "labelled": 5}
        asked = [p for action, p in aws_double.calls if action == "DescribeInstanceTopology"]
        assert len(asked) == 1 and len(asked[0]["InstanceIds"]) == 5
        hosts = {h["hostname"]: h for h in api.get("/v1/hosts").json()}
        for name, nn in network.items():
            labels = hosts[name]["labels"]
            assert [labels[k] for k in LAYERS] == nn
            assert labels["gpufabric.io/ec2-instance-id"].startswith("i-")

        # Nothing new: the next sync asks EC2 nothing and the labels stay.
        aws_double.calls.clear()
        report = sync(api)
        assert report["instance_topology"] == {"asked": 0, "labelled": 5}
        assert not [a for a, _ in aws_double.calls if a == "DescribeInstanceTopology"]
        assert [api.get(f"/v1/hosts/{name}").json()["labels"][LAYERS[2]] for name in sorted(network)] == [
            network[name][2] for name in sorted(network)
        ]

        # Three nodes under one layer-3 node do not exist; the refusal names the layer and the looser fit.
        refused = tenant.post("/v1/leases", json={**GANG, "nodes": 3, "topology": "same-network-node-layer-3"})
        assert refused.status_code == 409, refused.text
        detail = str(refused.json())
        assert "layer 3" in detail and "layer 2" in detail and "nn-us-east-1a-block0" in detail

        placed = tenant.post("/v1/leases", json={**GANG, "nodes": 2, "topology": "same-network-node-layer-3"})
        assert placed.status_code == 201, placed.text
        leased = {n["host"] for n in placed.json()["result"]["nodes"]}
        assert len({tuple(network[h]) for h in leased}) == 1


def test_node_labels_win_and_new_or_gone_instances(
    aws: AwsTarget,
    aws_double: AwsDouble,
    eks: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> None:
    create_gpu_nodegroup(eks, cluster, "h100-train", instance_type="p5.48xlarge", desired=2, max_size=5)
    labelled = materialize_nodegroup(kube, nodegroups, cluster.name, "h100-train", REGION)  # EKS labelled these
    register_instances(aws_double, labelled)
    register_backend(controller, aws, kube, tmp_path)
    with controller.admin() as api:
        report = sync(api)
        assert report["instance_topology"] == {"asked": 0, "labelled": 0}
        first = sorted(labelled, key=lambda n: n["metadata"]["name"])[0]
        host = api.get(f"/v1/hosts/{first['metadata']['name']}").json()
        assert host["labels"][LAYERS[2]] == first["metadata"]["labels"][LAYERS[2]]

        # A node EKS did not label joins; its instance is not (yet) known to EC2: the sync says so, nothing breaks.
        eks.update_nodegroup_config(
            clusterName=cluster.name, nodegroupName="h100-train", scalingConfig={"desiredSize": 3}
        )
        new = [
            n
            for n in materialize_nodegroup(kube, nodegroups, cluster.name, "h100-train", REGION, network_labels=False)
            if n["metadata"]["name"] not in {m["metadata"]["name"] for m in labelled}
        ]
        response = api.post("/v1/backends/eks-train/sync").json()
        assert response["instance_topology"] == {"asked": 1, "labelled": 0}
        assert response["errors"] == []  # the gone id is left out, the rest answered (here: none left)
        register_instances(aws_double, new)
        report = sync(api)  # an instance answered without network nodes is asked again only after a while
        assert report["instance_topology"] == {"asked": 0, "labelled": 0}
        assert LAYERS[2] not in api.get(f"/v1/hosts/{new[0]['metadata']['name']}").json()["labels"]


def test_an_instance_without_network_nodes_is_asked_again_after_the_retry_window(
    aws: AwsTarget, aws_double: AwsDouble
) -> None:
    config = EksConfig(cluster="c", region=REGION, endpoint_url=aws.endpoint_url)
    node = KubeGpuHost(name="n1", provider_id="aws:///us-east-1a/i-0000000000000abcd", labels={})
    aws_double.add_instances(
        [{"instance_id": "i-0000000000000abcd", "instance_type": "p5.48xlarge", "availability_zone": "us-east-1a"}]
    )
    first = node_topology_labels(config, [node], {}, now=1000)
    assert (first.asked, first.labelled) == (1, 0)
    stored = {"n1": first.labels["n1"]}
    assert stored["n1"] == {
        "gpufabric.io/ec2-instance-id": "i-0000000000000abcd",
        "gpufabric.io/ec2-topology-asked": "1000",
    }
    assert node_topology_labels(config, [node], stored, now=1000 + EMPTY_RETRY_S - 1).asked == 0
    aws_double.instances["i-0000000000000abcd"]["network_nodes"] = ["x", "y", "z"]  # EC2 caught up
    again = node_topology_labels(config, [node], stored, now=1000 + EMPTY_RETRY_S)
    assert (again.asked, again.labelled) == (1, 1)
    assert [again.labels["n1"][k] for k in LAYERS] == ["x", "y", "z"]


def test_describe_instance_topology_batches_100_ids_and_reports_unknown_ids(
    aws: AwsTarget, aws_double: AwsDouble
) -> None:
    aws_double.add_instances(
        [
            {
                "instance_id": f"i-{n:017x}",
                "instance_type": "p5.48xlarge" if n % 2 else "g6.12xlarge",
                "availability_zone": "us-east-1a",
                "network_nodes": ["a", "b", f"c{n // 8}"],
            }
            for n in range(250)
        ]
    )
    ec2 = aws.client("ec2")
    found = describe_instance_topology(ec2, [f"i-{n:017x}" for n in range(250)])
    calls = [p for a, p in aws_double.calls if a == "DescribeInstanceTopology"]
    assert [len(p["InstanceIds"]) for p in calls] == [100, 100, 50]
    assert found["i-00000000000000009"].network_nodes == ["a", "b", "c1"]
    assert found["i-00000000000000008"].network_nodes == []  # g6 is not a type EC2 describes
    with pytest.raises(AwsCallFailed) as err:
        describe_instance_topology(ec2, ["i-00000000000000001", "i-0000000000000dead"])
    assert err.value.code == "InvalidInstanceID.NotFound" and "i-0000000000000dead" in err.value.message
