"""EKS networking checks for GPU nodegroups, as structured findings.

Formulas (Amazon VPC CNI in secondary-IP mode, the EKS default):

* pods per node = ENIs x (IPv4 per ENI - 1) + 2. Each ENI's primary address is not handed to pods;
  the + 2 counts the host-network pods (aws-node, kube-proxy). ``MAX_ENI`` caps the ENIs used.
* IPs one node holds in its subnet: every attached ENI takes all its addresses
  (``ENIs attached x IPv4 per ENI``) while only ``WARM_ENI_TARGET`` is set (default 1): ipamd keeps that
  many ENIs with no pod on them, so ENIs attached = min(ENIs, ENIs in use + WARM_ENI_TARGET), at least 1.
  With ``WARM_IP_TARGET`` or ``MINIMUM_IP_TARGET`` set the CNI allocates addresses one by one instead:
  secondary IPs = min(pod IPs, max(pods + WARM_IP_TARGET, MINIMUM_IP_TARGET)), plus one primary per ENI.
* subnet headroom at max size = free IPs in the nodegroup's subnets - nodes at maxSize x IPs held per node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from drivers.eks.nodegroups import InstanceTypeFacts

Level = Literal["info", "warning", "error"]

# us-east-1 list price for data between AZs: charged once on each side (out and in).
CROSS_AZ_USD_PER_GB_EACH_DIRECTION = 0.01
# Below this share of spare subnet IPs a scale-up or an ENI churn may fail: warn before it does.
HEADROOM_WARNING_FRACTION = 0.1


class Finding(BaseModel):
    level: Level
    code: str
    message: str
    figures: dict[str, Any] = Field(default_factory=dict)


class VpcCniSettings(BaseModel):
    """The aws-node environment that decides how many IPs a node holds."""

    warm_eni_target: int = Field(default=1, ge=0)
    warm_ip_target: int | None = Field(default=None, ge=0)
    minimum_ip_target: int | None = Field(default=None, ge=0)
    max_eni: int | None = Field(default=None, ge=1, description="MAX_ENI: caps the ENIs the CNI attaches")

    @classmethod
    def from_env(cls, env: dict[str, str]) -> VpcCniSettings:
        def number(name: str) -> int | None:
            value = env.get(name)
            return int(value) if value not in (None, "") else None

        return cls(
            warm_eni_target=number("WARM_ENI_TARGET") if number("WARM_ENI_TARGET") is not None else 1,  # type: ignore[arg-type]
            warm_ip_target=number("WARM_IP_TARGET"),
            minimum_ip_target=number("MINIMUM_IP_TARGET"),
            max_eni=number("MAX_ENI"),
        )

    @property
    def ip_mode(self) -> bool:
        """True when WARM_IP_TARGET / MINIMUM_IP_TARGET replace the whole-ENI warm pool."""
        return bool(self.warm_ip_target) or bool(self.minimum_ip_target)


def usable_enis(max_enis: int, max_eni: int | None = None) -> int:
    return min(max_enis, max_eni) if max_eni else max_enis


def max_pods(max_enis: int, ipv4_per_eni: int, max_eni: int | None = None) -> int:
    """``ENIs x (IPv4 per ENI - 1) + 2`` with ENIs capped by ``MAX_ENI``."""
    enis = usable_enis(max_enis, max_eni)
    return enis * (ipv4_per_eni - 1) + 2


def ips_held_per_node(facts: InstanceTypeFacts, pods: int, cni: VpcCniSettings | None = None) -> int:
    """Subnet addresses one node holds with ``pods`` pods using pod IPs (host-network pods excluded)."""
    cni = cni or VpcCniSettings()
    enis = usable_enis(facts.max_enis, cni.max_eni)
    per_eni = facts.ipv4_per_eni - 1
    pod_ips = enis * per_eni
    pods = max(0, min(pods, pod_ips))
    if cni.ip_mode:
        secondary = max(pods + (cni.warm_ip_target or 0), cni.minimum_ip_target or 0)
        secondary = min(secondary, pod_ips)
        attached = max(1, math.ceil(secondary / per_eni)) if per_eni else 1
        return secondary + attached
    in_use = math.ceil(pods / per_eni) if per_eni else 0
    attached = max(1, min(enis, in_use + cni.warm_eni_target))
    return attached * facts.ipv4_per_eni


def pods_per_node_finding(facts: InstanceTypeFacts, cni: VpcCniSettings | None = None) -> list[Finding]:
    cni = cni or VpcCniSettings()
    full = max_pods(facts.max_enis, facts.ipv4_per_eni)
    capped = max_pods(facts.max_enis, facts.ipv4_per_eni, cni.max_eni)
    figures = {
        "instance_type": facts.instance_type,
        "enis": facts.max_enis,
        "ipv4_per_eni": facts.ipv4_per_eni,
        "max_pods": full,
    }
    findings = [
        Finding(
            level="info",
            code="pods-per-node",
            message=(
                f"{facts.instance_type}: {facts.max_enis} ENIs x ({facts.ipv4_per_eni} IPv4 - 1) + 2 = {full} pods per node"
            ),
            figures=figures,
        )
    ]
    if cni.max_eni and cni.max_eni < facts.max_enis:
        findings.append(
            Finding(
                level="warning",
                code="max-eni-lowers-pods",
                message=(
                    f"MAX_ENI={cni.max_eni} caps {facts.instance_type} at {cni.max_eni} of {facts.max_enis} ENIs: "
                    f"{capped} pods per node instead of {full}; set the kubelet's --max-pods to {capped}"
                ),
                figures={**figures, "max_eni": cni.max_eni, "max_pods_with_max_eni": capped},
            )
        )
    return findings


def subnet_headroom_finding(
    facts: InstanceTypeFacts,
    max_nodes: int,
    free_ips: int,
    cni: VpcCniSettings | None = None,
    pods_per_node: int | None = None,
    nodegroup: str | None = None,
) -> Finding:
    """Will the subnets hold the nodegroup at maxSize with the CNI's warm pool?

    ``pods_per_node`` defaults to the most pods a node can run (the worst case); GPU nodes usually run
    far fewer, so pass the expected count for a realistic figure.
    """
    cni = cni or VpcCniSettings()
    pods = max_pods(facts.max_enis, facts.ipv4_per_eni, cni.max_eni) - 2 if pods_per_node is None else pods_per_node
    per_node = ips_held_per_node(facts, pods, cni)
    needed = per_node * max_nodes
    headroom = free_ips - needed
    figures: dict[str, Any] = {
        "instance_type": facts.instance_type,
        "max_nodes": max_nodes,
        "pods_per_node": pods,
        "ips_per_node": per_node,
        "ips_needed_at_max": needed,
        "free_ips": free_ips,
        "headroom": headroom,
        "warm_eni_target": cni.warm_eni_target,
        "warm_ip_target": cni.warm_ip_target,
        "minimum_ip_target": cni.minimum_ip_target,
    }
    name = f"nodegroup {nodegroup}" if nodegroup else facts.instance_type
    summary = (
        f"{name} at maxSize {max_nodes} holds {max_nodes} x {per_node} = {needed} subnet IPs "
        f"({pods} pods per node); the subnets have {free_ips} free"
    )
    if headroom < 0:
        return Finding(
            level="error",
            code="subnet-ip-exhaustion",
            message=f"{summary}: {-headroom} short. Use larger subnets, prefix delegation, or WARM_IP_TARGET/MINIMUM_IP_TARGET.",
            figures=figures,
        )
    if free_ips and headroom < HEADROOM_WARNING_FRACTION * free_ips:
        return Finding(
            level="warning",
            code="subnet-ip-headroom-low",
            message=f"{summary}: only {headroom} to spare",
            figures=figures,
        )
    return Finding(level="info", code="subnet-ip-headroom", message=f"{summary}: {headroom} to spare", figures=figures)


def cross_az_finding(nodes: int, zones: Iterable[str], efa: bool = False) -> Finding | None:
    """A warning when a request for several nodes could land in more than one AZ."""
    distinct = sorted(set(zones))
    if nodes < 2 or len(distinct) < 2:
        return None
    message = (
        f"{nodes} nodes may be spread over {len(distinct)} AZs ({', '.join(distinct)}): traffic between AZs costs "
        f"${CROSS_AZ_USD_PER_GB_EACH_DIRECTION:.2f}/GB in each direction and adds latency to every collective. "
        "Pin the request to one AZ (or a cluster placement group)."
    )
    if efa:
        message += " EFA traffic does not cross AZs at all: a multi-AZ gang falls back to TCP."
    return Finding(
        level="warning",
        code="cross-az",
        message=message,
        figures={
            "nodes": nodes,
            "availability_zones": distinct,
            "usd_per_gb_each_direction": CROSS_AZ_USD_PER_GB_EACH_DIRECTION,
            "efa": efa,
        },
    )


def check_nodegroup(
    facts: InstanceTypeFacts,
    max_nodes: int,
    free_ips: int | None,
    zones: Iterable[str] = (),
    cni: VpcCniSettings | None = None,
    pods_per_node: int | None = None,
    efa: bool = False,
    nodegroup: str | None = None,
) -> list[Finding]:
    """All networking findings for one nodegroup (``free_ips`` None skips the subnet check)."""
    findings = pods_per_node_finding(facts, cni)
    if free_ips is not None:
        findings.append(subnet_headroom_finding(facts, max_nodes, free_ips, cni, pods_per_node, nodegroup))
    spread = cross_az_finding(max_nodes, zones, efa)
    if spread is not None:
        findings.append(spread)
    return findings


def subnet_free_ips(ec2: Any, subnet_ids: list[str]) -> dict[str, tuple[str, int]]:
    """``{subnet id: (AZ, free IPv4 addresses)}`` from ``ec2.describe_subnets``."""
    if not subnet_ids:
        return {}
    response = ec2.describe_subnets(SubnetIds=subnet_ids)
    return {s["SubnetId"]: (s["AvailabilityZone"], int(s["AvailableIpAddressCount"])) for s in response["Subnets"]}
