"""Node objects as EKS, the NVIDIA device plugin and GFD register them, and nodes for a moto nodegroup.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import uuid
from typing import Any

from devservices.kube_emulator.resources import RESOURCE_BY_PLURAL, _now
from devservices.kube_emulator.server import KubeEmulator

# GFD's nvidia.com/gpu.product is the NVML device name with spaces as dashes.
_GFD_PRODUCT = {
    "T4": "Tesla-T4",
    "A10G": "NVIDIA-A10G",
    "L4": "NVIDIA-L4",
    "L40S": "NVIDIA-L40S",
    "A100": "NVIDIA-A100-SXM4-40GB",
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
}


def node_objects(
    cluster: str,
    nodegroup: str,
    instance_type: str,
    count: int,
    zones: list[str],
    region: str,
    facts: Any,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    capacity_type: str = "ON_DEMAND",
    start_index: int = 0,
    network_labels: bool = True,
) -> list[dict[str, Any]]:
    """Node objects as EKS + the NVIDIA device plugin + GFD would register them.

    ``network_labels=False`` leaves out the network-node-layer labels (the controller then reads them from EC2's
    instance topology).

    ``facts`` is a ``drivers.eks.InstanceTypeFacts``; zones are used round robin; taints are in
    Kubernetes spelling. Network-node-layer labels put each 4 nodes under one layer-3 switch.
    """
    from drivers.eks.network import max_pods

    nodes = []
    for i in range(start_index, start_index + count):
        zone = zones[i % len(zones)] if zones else f"{region}a"
        name = f"ip-10-{abs(hash((cluster, nodegroup))) % 250}-{i // 250}-{i % 250 + 1}.{region}.compute.internal"
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance_type,
            "topology.kubernetes.io/region": region,
            "topology.kubernetes.io/zone": zone,
            "eks.amazonaws.com/nodegroup": nodegroup,
            "eks.amazonaws.com/capacityType": capacity_type,
            "topology.k8s.aws/network-node-layer-1": f"nn-{cluster[:4]}l1",
            "topology.k8s.aws/network-node-layer-2": f"nn-{nodegroup[:4]}l2",
            "topology.k8s.aws/network-node-layer-3": f"nn-{nodegroup[:4]}l3-{i // 4}",
            **(labels or {}),
        }
        if not network_labels:
            for layer in (1, 2, 3):
                node_labels.pop(f"topology.k8s.aws/network-node-layer-{layer}", None)
        capacity = {
            "cpu": str(facts.vcpus or 1),
            "memory": f"{(facts.memory_mib or 1024) * 1024}Ki",
            "pods": str(max_pods(facts.max_enis, facts.ipv4_per_eni)),
            "ephemeral-storage": "104845292Ki",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        }
        if facts.gpu_count:
            capacity["nvidia.com/gpu"] = str(facts.gpu_count)
            node_labels.update(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": _GFD_PRODUCT.get(facts.gpu_model or "", f"NVIDIA-{facts.gpu_model}"),
                    "nvidia.com/gpu.count": str(facts.gpu_count),
                    "nvidia.com/gpu.memory": str(facts.gpu_memory_mib or 0),
                }
            )
        if facts.efa_supported and facts.max_efa_interfaces:
            capacity["vpc.amazonaws.com/efa"] = str(facts.max_efa_interfaces)
        instance_id = f"i-{uuid.uuid4().hex[:17]}"
        nodes.append(
            {
                "metadata": {"name": name, "labels": node_labels},
                "spec": {"providerID": f"aws:///{zone}/{instance_id}", "taints": list(taints or [])},
                "status": {
                    "capacity": capacity,
                    "allocatable": dict(capacity),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250 + 1}"},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": {
                        "machineID": uuid.uuid4().hex,
                        "systemUUID": str(uuid.uuid4()),
                        "bootID": str(uuid.uuid4()),
                        "kernelVersion": "6.1.119-129.201.amzn2023.x86_64",
                        "osImage": "Amazon Linux 2023.6.20241212",
                        "containerRuntimeVersion": "containerd://1.7.23",
                        "kubeletVersion": "v1.32.0-eks-aeac579",
                        "kubeProxyVersion": "v1.32.0-eks-aeac579",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                },
            }
        )
    return nodes


def materialize_nodegroup(
    emulator: KubeEmulator,
    nodegroups: Any,
    cluster: str,
    nodegroup: str,
    region: str,
    *,
    network_labels: bool = True,
) -> list[dict[str, Any]]:
    """Register nodes for a moto nodegroup's desired size (``nodegroups`` is a ``drivers.eks.EksNodegroups``).

    Existing nodes of the nodegroup are kept; only the difference to the desired size is added or
    removed, so a test can scale in moto and call this again.
    """
    info, facts = nodegroups.nodegroup_facts(cluster, nodegroup)
    instance_type = info.instance_types[0]
    existing = emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
    wanted = info.scaling.desired
    if len(existing) > wanted:
        for node in sorted(existing, key=lambda n: n["metadata"]["name"])[wanted:]:
            emulator.state.delete(RESOURCE_BY_PLURAL[("", "nodes")], None, node["metadata"]["name"])
        return emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
    zones = []
    if nodegroups.ec2 is not None and info.subnets:
        subnets = nodegroups.ec2.describe_subnets(SubnetIds=info.subnets)["Subnets"]
        zones = sorted({s["AvailabilityZone"] for s in subnets})
    emulator.add_nodes(
        node_objects(
            cluster,
            nodegroup,
            instance_type,
            wanted - len(existing),
            zones,
            region,
            facts[instance_type],
            labels=info.labels,
            taints=[t.to_kube() for t in info.taints],
            capacity_type=info.capacity_type or "ON_DEMAND",
            start_index=len(existing),
            network_labels=network_labels,
        )
    )
    return emulator.list_objects("nodes", label_selector=f"eks.amazonaws.com/nodegroup={nodegroup}")
