"""Reaching an ``eks`` backend's cluster and AWS account from its stored config, and the host labels its sync writes
and its provisioning reads."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from controller.backends.contract import ProvisionFailed
from controller.backends.eks.config import EksConfig
from controller.store.models import Host
from drivers.eks import EksNodegroups
from drivers.eks.kube import KubeGpuCluster, kube_configuration, kube_configuration_from_file

SOURCE_LABEL = "gpufabric.io/eks-source"  # "node" | "headroom"
SCALE_REQUESTED_LABEL = "gpufabric.io/eks-scale-requested"  # headroom: the lease it was scaled for
EFA_LABEL = "gpufabric.io/efa"
PLACEMENT_GROUP_HOST_LABEL = "gpufabric.dev/placement-group"
KARPENTER_POOL_LABEL = "gpufabric.io/karpenter-pool"  # hosts of a Karpenter GPU pool (node or headroom)


class EksBackendError(ProvisionFailed):
    pass


def backend_config(raw: dict[str, Any]) -> EksConfig:
    return EksConfig.from_stored(raw)


# What makes a backend's Kubernetes client from its config (tests give the emulator's).
KubeFactory = Callable[[EksConfig], KubeGpuCluster]


def kube_cluster(config: EksConfig) -> KubeGpuCluster:
    if config.kube_in_cluster:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        configuration = k8s_client.Configuration()
        # Re-read per use: the projected ServiceAccount token rotates.
        k8s_config.load_incluster_config(client_configuration=configuration)
    elif config.kubeconfig:
        configuration = kube_configuration_from_file(config.kubeconfig, config.kube_context)
    elif config.kube_api_url:
        configuration = kube_configuration(
            config.kube_api_url, config.kube_token, ca_data=config.kube_ca_data, verify_ssl=config.kube_verify_ssl
        )
    else:
        raise EksBackendError(
            f"EKS cluster {config.cluster}: no Kubernetes access configured (kube_api_url or kubeconfig)"
        )
    return KubeGpuCluster.from_configuration(configuration)


def aws_nodegroups(config: EksConfig) -> EksNodegroups:
    return EksNodegroups.connect(config.aws)


def tenant_namespace(tenant: str, lease_id: str) -> str:
    """A DNS label unique per lease that still names the tenant."""
    slug = re.sub(r"[^a-z0-9-]+", "-", tenant.lower()).strip("-")[:30].strip("-") or "tenant"
    return f"gf-{slug}-{lease_id[:12]}"


def is_headroom(host: Host) -> bool:
    return (host.labels or {}).get(SOURCE_LABEL) == "headroom"
