"""The names gpufabric reads and writes on Kubernetes GPU nodes: extended resources, node labels, its own labels,
the device plugin's config, and the node listing's paging."""

from __future__ import annotations

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
NETWORK_LAYER_LABELS = tuple(f"topology.k8s.aws/network-node-layer-{i}" for i in (1, 2, 3))
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
LEASE_LABEL = "gpufabric.io/lease"
DEFAULT_DEVICE_PLUGIN_NAMESPACE = "gpu-operator"
DEFAULT_DEVICE_PLUGIN_CONFIGMAP = "gpufabric-device-plugin-configs"
DEFAULT_PAGE_SIZE = 500  # nodes per list request (limit/continue), as client-go's pager
LIST_ATTEMPTS = 3  # a paginated list whose continue token expired (410) starts over, this many times in all
