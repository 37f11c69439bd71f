"""The network nodes above each EKS GPU node, from EC2 ``DescribeInstanceTopology``, as host labels.

EKS labels nodes ``topology.k8s.aws/network-node-layer-1..3`` itself on supported types; a node that carries them
keeps them. For the others the sync asks EC2 for the node's instance (its ``spec.providerID``) and writes the same
labels, which placement's ``same-network-node-layer-N`` gangs read. An instance's topology does not change while
it runs, so the host remembers which instance it asked about (``gpufabric.io/ec2-instance-id``) and the next sync
reuses the labels it already has; only new instances are asked (100 ids per call). An answer without network
nodes (a type EC2 does not describe, or an instance not yet running) is asked again after
:data:`EMPTY_RETRY_S`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.backends.eks.config import EksConfig
from drivers.eks.errors import AwsCallFailed
from drivers.eks.kube_models import KubeGpuHost
from drivers.eks.topology import (
    NETWORK_NODE_LABELS,
    InstanceTopology,
    describe_instance_topology,
    instance_id_from_provider_id,
    topology_labels,
)

log = logging.getLogger("gpufabric.backends.eks.topology")

INSTANCE_ID_LABEL = "gpufabric.io/ec2-instance-id"
TOPOLOGY_ASKED_LABEL = "gpufabric.io/ec2-topology-asked"  # unix time of an answer without network nodes
EMPTY_RETRY_S = 600
_NOT_FOUND = re.compile(r"'(i-[0-9a-f]+)'")


@dataclass
class TopologyResult:
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # node name -> labels to add
    asked: int = 0  # instances asked of EC2 this sync
    labelled: int = 0  # nodes that got network-node labels from EC2 (asked now or remembered)
    errors: list[str] = field(default_factory=list)


def node_topology_labels(
    config: EksConfig,
    nodes: list[KubeGpuHost],
    stored: Mapping[str, Mapping[str, str]],
    *,
    ec2_factory: Callable[[EksConfig], Any] | None = None,
    now: float | None = None,
) -> TopologyResult:
    """Labels to add to each node's host: the instance id, and the network nodes when the node has none.

    ``stored`` is each known host's labels by host name (the previous sync's answer)."""
    now = time.time() if now is None else now
    result = TopologyResult()
    wanted: dict[str, str] = {}  # instance id -> node name
    for node in nodes:
        instance_id = instance_id_from_provider_id(node.provider_id)
        if instance_id is None:
            continue
        labels = {INSTANCE_ID_LABEL: instance_id}
        result.labels[node.name] = labels
        if all(k in node.labels for k in NETWORK_NODE_LABELS):
            continue  # EKS labelled the node itself
        before = stored.get(node.name) or {}
        if before.get(INSTANCE_ID_LABEL) == instance_id:
            remembered = {k: before[k] for k in NETWORK_NODE_LABELS if k in before}
            if len(remembered) == len(NETWORK_NODE_LABELS):
                labels.update(remembered)
                result.labelled += 1
                continue
            asked = before.get(TOPOLOGY_ASKED_LABEL)
            if asked and asked.isdigit() and now - int(asked) < EMPTY_RETRY_S:
                labels[TOPOLOGY_ASKED_LABEL] = asked
                continue
        wanted[instance_id] = node.name
    if not wanted:
        return result
    found = _ask(config, sorted(wanted), ec2_factory, result)
    if found is None:
        return result
    result.asked = len(wanted)
    for instance_id, name in wanted.items():
        topo = topology_labels(found.get(instance_id))
        if topo:
            result.labels[name].update(topo)
            result.labelled += 1
        else:
            result.labels[name][TOPOLOGY_ASKED_LABEL] = str(int(now))
    return result


def _ask(
    config: EksConfig, ids: list[str], ec2_factory: Callable[[EksConfig], Any] | None, result: TopologyResult
) -> dict[str, InstanceTopology] | None:
    """EC2's answer; ids EC2 no longer knows (terminated between the node list and this call) are left out and
    the rest asked again, a few times."""
    try:
        ec2 = ec2_factory(config) if ec2_factory is not None else config.aws.client("ec2")
    except Exception as exc:  # no credentials / endpoint: the nodes keep what they have
        result.errors.append(f"instance topology: {exc}")
        return None
    remaining = list(ids)
    for _ in range(4):
        try:
            return describe_instance_topology(ec2, remaining)
        except AwsCallFailed as exc:
            gone = _NOT_FOUND.findall(exc.message) if exc.code == "InvalidInstanceID.NotFound" else []
            if not gone:
                result.errors.append(f"instance topology: {exc}")
                return None
            log.info("instance topology: %s gone, asking without", ", ".join(gone))
            remaining = [i for i in remaining if i not in gone]
            if not remaining:
                return {}
    result.errors.append("instance topology: instances kept disappearing; try at the next sync")
    return None
