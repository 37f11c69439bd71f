"""boto3 against the moto server over HTTP: clusters, nodegroups, instance-type facts, scaling."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.eks import (
    ClusterNotFound,
    EksNodegroups,
    InstanceTypeCache,
    NodegroupNotFound,
    Taint,
    UnknownInstanceType,
    builtin_facts,
    builtin_instance_types,
)
from tests.support.eks import Cluster, create_gpu_nodegroup

pytestmark = pytest.mark.integration


def test_lists_and_describes_clusters_and_nodegroups(nodegroups: EksNodegroups, eks: Any, cluster: Cluster) -> None:
    create_gpu_nodegroup(eks, cluster, "l4-train", desired=1, max_size=3)
    create_gpu_nodegroup(
        eks, cluster, "h100", instance_type="p5.48xlarge", desired=0, max_size=2, zones=("us-east-1b",)
    )

    assert nodegroups.list_clusters() == ["fabric-train"]
    info = nodegroups.describe_cluster("fabric-train")
    assert sorted(info.subnet_ids) == sorted(cluster.subnets.values())
    assert info.status == "ACTIVE"
    assert nodegroups.list_nodegroups("fabric-train") == ["h100", "l4-train"]

    l4 = nodegroups.describe_nodegroup("fabric-train", "l4-train")
    assert l4.instance_types == ["g6.12xlarge"]
    assert (l4.scaling.min, l4.scaling.desired, l4.scaling.max) == (0, 1, 3)
    assert l4.labels == {"gpufabric.io/pool": "train"}
    assert l4.taints == [Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")]
    assert l4.subnets == [cluster.subnets["us-east-1a"]]


def test_missing_cluster_and_nodegroup_are_named(nodegroups: EksNodegroups, cluster: Cluster) -> None:
    with pytest.raises(ClusterNotFound, match="nope"):
        nodegroups.describe_cluster("nope")
    with pytest.raises(NodegroupNotFound, match="fabric-train/ghost"):
        nodegroups.describe_nodegroup("fabric-train", "ghost")


def test_instance_type_facts_from_ec2(nodegroups: EksNodegroups) -> None:
    facts = nodegroups.instance_type_facts(["g6.12xlarge", "p5.48xlarge", "p4d.24xlarge", "m5.large"])

    g6 = facts["g6.12xlarge"]
    assert (g6.gpu_model, g6.gpu_count, g6.gpu_memory_mib) == ("L4", 4, 22888)
    assert g6.efa_supported and g6.max_efa_interfaces == 1
    assert g6.network_performance == "40 Gigabit" and g6.network_gbps == 40
    assert (g6.max_enis, g6.ipv4_per_eni) == (8, 30)

    p5 = facts["p5.48xlarge"]
    assert (p5.gpu_model, p5.gpu_count, p5.gpu_memory_mib) == ("H100", 8, 81920)
    assert p5.max_efa_interfaces == 32 and p5.network_gbps == 3200 and p5.network_cards == 32

    p4d = facts["p4d.24xlarge"]
    assert p4d.network_performance == "4x 100 Gigabit" and p4d.network_gbps == 400

    m5 = facts["m5.large"]
    assert m5.gpu_count == 0 and m5.gpu_model is None and not m5.efa_supported


def test_facts_are_cached_per_region_until_the_ttl(eks: Any, ec2: Any) -> None:
    now = [0.0]
    cache = InstanceTypeCache(ttl_seconds=60, clock=lambda: now[0])
    nodegroups = EksNodegroups(eks, ec2, cache)
    nodegroups.instance_type_facts(["g6.12xlarge"])
    nodegroups.instance_type_facts(["g6.12xlarge"])
    assert cache.ec2_calls == 1
    now[0] = 61
    nodegroups.instance_type_facts(["g6.12xlarge"])
    assert cache.ec2_calls == 2


def test_unknown_instance_type_is_an_error(nodegroups: EksNodegroups) -> None:
    with pytest.raises(UnknownInstanceType, match=r"g99\.huge"):
        nodegroups.instance_type_facts(["g99.huge"])


def test_builtin_table_matches_ec2(nodegroups: EksNodegroups) -> None:
    """The built-in table is a copy of DescribeInstanceTypes answers: keep it honest."""
    names = builtin_instance_types()
    live = nodegroups.instance_type_facts(names)
    for name in names:
        table = builtin_facts(name)
        assert table is not None
        assert table.model_dump(exclude={"source"}) == live[name].model_dump(exclude={"source"}), name


def test_scaling_within_min_max_and_refusal_at_max(nodegroups: EksNodegroups, eks: Any, cluster: Cluster) -> None:
    create_gpu_nodegroup(eks, cluster, "l4-train", min_size=0, desired=1, max_size=2)

    grown = nodegroups.scale_up("fabric-train", "l4-train", add_nodes=1)
    assert grown.changed and not grown.refused and (grown.previous_desired, grown.desired) == (1, 2)
    assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 2

    refused = nodegroups.scale_up("fabric-train", "l4-train", add_nodes=1)
    assert refused.refused and not refused.changed
    assert refused.reason is not None and "maxSize=2" in refused.reason and "room for 0 more" in refused.reason
    # Moto would accept desired > max; the driver must not ask.
    assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 2

    too_low = nodegroups.scale_to("fabric-train", "l4-train", -0 - 1)
    assert too_low.refused and "minSize=0" in (too_low.reason or "")


def test_scale_down_stops_at_min(nodegroups: EksNodegroups, eks: Any, cluster: Cluster) -> None:
    create_gpu_nodegroup(eks, cluster, "l4-train", min_size=1, desired=3, max_size=4)
    down = nodegroups.scale_down("fabric-train", "l4-train", idle_nodes=5)
    assert down.changed and down.desired == 1
    again = nodegroups.scale_down("fabric-train", "l4-train", idle_nodes=1)
    assert not again.changed and "minSize=1" in (again.reason or "")


def test_networking_checks_with_subnets_from_ec2(
    nodegroups: EksNodegroups, eks: Any, ec2: Any, cluster: Cluster
) -> None:
    from drivers.eks import check_nodegroup, subnet_free_ips

    create_gpu_nodegroup(eks, cluster, "l4-train", max_size=4, zones=("us-east-1a", "us-east-1b"))
    info, facts = nodegroups.nodegroup_facts("fabric-train", "l4-train")
    subnets = subnet_free_ips(ec2, info.subnets)
    assert {zone for zone, _ in subnets.values()} == {"us-east-1a", "us-east-1b"}
    free = sum(count for _, count in subnets.values())
    assert free == 2 * 251  # a /24 less AWS's five reserved addresses, each

    findings = check_nodegroup(
        facts["g6.12xlarge"],
        max_nodes=info.scaling.max,
        free_ips=free,
        zones=[zone for zone, _ in subnets.values()],
        pods_per_node=6,
        efa=True,
        nodegroup="l4-train",
    )
    by_code = {f.code: f for f in findings}
    assert by_code["pods-per-node"].figures["max_pods"] == 234
    assert by_code["subnet-ip-headroom"].figures["ips_needed_at_max"] == 4 * 60
    assert by_code["cross-az"].level == "warning"
