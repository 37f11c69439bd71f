"""VPC CNI arithmetic: pods per node, MAX_ENI, IPs held with the warm pool, subnet headroom, cross-AZ."""

from __future__ import annotations

import pytest

from drivers.eks import (
    VpcCniSettings,
    builtin_facts,
    check_nodegroup,
    cross_az_finding,
    ips_held_per_node,
    max_pods,
    subnet_headroom_finding,
)
from drivers.eks.nodegroups import InstanceTypeFacts


def _facts(name: str) -> InstanceTypeFacts:
    facts = builtin_facts(name)
    assert facts is not None
    return facts


def test_pods_per_node_g6_12xlarge() -> None:
    g6 = _facts("g6.12xlarge")
    assert (g6.max_enis, g6.ipv4_per_eni) == (8, 30)
    assert max_pods(g6.max_enis, g6.ipv4_per_eni) == 8 * 29 + 2 == 234


@pytest.mark.parametrize(("max_eni", "pods"), [(None, 234), (4, 4 * 29 + 2), (1, 31), (20, 234)])
def test_max_eni_lowers_pods(max_eni: int | None, pods: int) -> None:
    assert max_pods(8, 30, max_eni) == pods


def test_other_types() -> None:
    assert max_pods(3, 10) == 29  # g4dn.xlarge (and m5.large)
    p5 = _facts("p5.48xlarge")
    assert max_pods(p5.max_enis, p5.ipv4_per_eni) == 64 * 49 + 2


def test_ips_held_with_warm_eni_target() -> None:
    g6 = _facts("g6.12xlarge")
    # No pods: the primary ENI alone is the warm ENI.
    assert ips_held_per_node(g6, 0) == 30
    # A few pods use the primary ENI; WARM_ENI_TARGET=1 attaches one spare ENI with all its IPs.
    assert ips_held_per_node(g6, 4) == 2 * 30
    assert ips_held_per_node(g6, 29) == 2 * 30
    assert ips_held_per_node(g6, 30) == 3 * 30
    # Full node: every ENI attached, no spare left to add.
    assert ips_held_per_node(g6, 232) == 8 * 30
    assert ips_held_per_node(g6, 4, VpcCniSettings(warm_eni_target=0)) == 30
    assert ips_held_per_node(g6, 4, VpcCniSettings(max_eni=1)) == 30


def test_ips_held_with_warm_ip_and_minimum_ip_targets() -> None:
    g6 = _facts("g6.12xlarge")
    # 4 pods + 2 warm = 6 secondary IPs on one ENI + its primary.
    assert ips_held_per_node(g6, 4, VpcCniSettings(warm_ip_target=2)) == 7
    # MINIMUM_IP_TARGET holds 40 secondaries: two ENIs (29 + 11), two primaries.
    assert ips_held_per_node(g6, 4, VpcCniSettings(warm_ip_target=2, minimum_ip_target=40)) == 42
    assert ips_held_per_node(g6, 4, VpcCniSettings(minimum_ip_target=10)) == 11


def test_env_parsing() -> None:
    cni = VpcCniSettings.from_env({"WARM_IP_TARGET": "5", "MINIMUM_IP_TARGET": "", "MAX_ENI": "2"})
    assert (cni.warm_eni_target, cni.warm_ip_target, cni.minimum_ip_target, cni.max_eni) == (1, 5, None, 2)


def test_subnet_headroom_at_max_size() -> None:
    g6 = _facts("g6.12xlarge")
    # Realistic GPU nodes: 6 pods each → 2 ENIs x 30 = 60 IPs; 4 nodes = 240 of a /24's 251.
    ok = subnet_headroom_finding(g6, max_nodes=4, free_ips=251, pods_per_node=6, nodegroup="l4")
    assert ok.level == "warning" and ok.code == "subnet-ip-headroom-low"
    assert ok.figures["ips_per_node"] == 60 and ok.figures["ips_needed_at_max"] == 240 and ok.figures["headroom"] == 11
    roomy = subnet_headroom_finding(g6, max_nodes=2, free_ips=1000, pods_per_node=6)
    assert roomy.level == "info" and roomy.figures["headroom"] == 880
    # Worst case (nodes full of pods): 8 x 30 = 240 each.
    short = subnet_headroom_finding(g6, max_nodes=4, free_ips=251)
    assert short.level == "error" and short.code == "subnet-ip-exhaustion"
    assert short.figures["ips_needed_at_max"] == 960 and short.figures["headroom"] == 251 - 960
    # WARM_IP_TARGET shrinks the footprint.
    tuned = subnet_headroom_finding(g6, 4, 251, VpcCniSettings(warm_ip_target=2), pods_per_node=6)
    assert tuned.level == "info" and tuned.figures["ips_per_node"] == 9


def test_cross_az_warning() -> None:
    assert cross_az_finding(1, ["us-east-1a", "us-east-1b"]) is None
    assert cross_az_finding(4, ["us-east-1a", "us-east-1a"]) is None
    finding = cross_az_finding(2, ["us-east-1b", "us-east-1a"], efa=True)
    assert finding is not None and finding.level == "warning" and finding.code == "cross-az"
    assert finding.figures["availability_zones"] == ["us-east-1a", "us-east-1b"]
    assert "EFA" in finding.message and "$0.01/GB" in finding.message


def test_check_nodegroup_collects_findings() -> None:
    codes = [
        f.code
        for f in check_nodegroup(
            _facts("g6.12xlarge"),
            max_nodes=4,
            free_ips=5000,
            zones=["us-east-1a", "us-east-1b"],
            cni=VpcCniSettings(max_eni=2),
            pods_per_node=6,
        )
    ]
    assert codes == ["pods-per-node", "max-eni-lowers-pods", "subnet-ip-headroom", "cross-az"]
