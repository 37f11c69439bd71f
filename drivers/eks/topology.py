"""EC2 instance topology (``DescribeInstanceTopology``): the network nodes above each instance.

EC2 answers, per instance, its network nodes top-down: layer 1 at the top of the network, the last one directly
above the instance (three for most supported types, four for some). EKS puts the first three on its nodes as
``topology.k8s.aws/network-node-layer-1..3``; :func:`topology_labels` makes the same labels, so placement's
``same-network-node-layer-N`` reads either source alike. Types EC2 does not describe, and instances not running,
come back with no network nodes (no labels).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from drivers.eks.aws import call

MAX_IDS_PER_CALL = 100  # DescribeInstanceTopology takes at most 100 InstanceIds per request
NETWORK_NODE_LABELS = tuple(f"topology.k8s.aws/network-node-layer-{i}" for i in (1, 2, 3))
_PROVIDER_ID = re.compile(r"^aws:///[^/]*/(i-[0-9a-f]+)$")


class InstanceTopology(BaseModel):
    instance_id: str
    instance_type: str | None = None
    availability_zone: str | None = None
    group_name: str | None = None
    network_nodes: list[str] = Field(default_factory=list, description="top-down: layer 1 first")


def instance_id_from_provider_id(provider_id: str | None) -> str | None:
    """``aws:///us-east-1a/i-0abc...`` (a node's ``spec.providerID`` on EKS) -> ``i-0abc...``."""
    match = _PROVIDER_ID.match(provider_id or "")
    return match.group(1) if match else None


def describe_instance_topology(ec2: Any, instance_ids: Iterable[str]) -> dict[str, InstanceTopology]:
    """The topology of the given instances, asked in batches of 100 ids (each batch's pages followed).

    Raises :class:`drivers.eks.errors.AwsCallFailed` (e.g. ``InvalidInstanceID.NotFound`` for an id that is
    gone); the caller decides whether to ask again without it."""
    ids = sorted(set(instance_ids))
    out: dict[str, InstanceTopology] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        batch = ids[start : start + MAX_IDS_PER_CALL]

        def pages(batch: list[str] = batch) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for page in ec2.get_paginator("describe_instance_topology").paginate(InstanceIds=batch):
                found.extend(page.get("Instances", []))
            return found

        for raw in call("ec2:DescribeInstanceTopology", pages):
            out[raw["InstanceId"]] = InstanceTopology(
                instance_id=raw["InstanceId"],
                instance_type=raw.get("InstanceType"),
                availability_zone=raw.get("AvailabilityZone"),
                group_name=raw.get("GroupName"),
                network_nodes=list(raw.get("NetworkNodes") or []),
            )
    return out


def topology_labels(topology: InstanceTopology | None) -> dict[str, str]:
    """``topology.k8s.aws/network-node-layer-1..3`` from the first three network nodes (none: no labels)."""
    if topology is None or len(topology.network_nodes) < len(NETWORK_NODE_LABELS):
        return {}
    return dict(zip(NETWORK_NODE_LABELS, topology.network_nodes, strict=False))
