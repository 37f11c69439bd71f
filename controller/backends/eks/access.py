"""What an EKS lease hands its tenant (``result["access"]``): a ServiceAccount of its own in the lease namespace, a
Role limited to that namespace, a token for it and a ready kubeconfig (``drivers.eks.tenant_access``).

The kubeconfig's cluster is the backend's: ``tenant_api_url`` (the cluster's public endpoint) or the address
gpufabric reaches it at, with the CA gpufabric trusts for it. The access is stored encrypted and shown only to the
lease's tenant and admins (``controller.leases.access``); deleting the namespace on release deletes the
ServiceAccount, which voids the token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.backends.contract import LeaseInfo
from controller.backends.eks.config import EksConfig
from controller.placement import parse_request
from drivers.eks.kube import KubeGpuCluster
from drivers.eks.tenant_access import ACCOUNT, cluster_ca, grant_tenant_access, kubeconfig


def token_seconds(lease: LeaseInfo, config: EksConfig) -> int:
    """The token lives as long as the lease may (its duration), else the backend's ``tenant_token_s``."""
    duration = parse_request(lease.request).duration
    if duration is None:
        return config.tenant_token_s
    return max(600, int(duration.total_seconds()))  # TokenRequest refuses less than 10 minutes


def grant(
    kube: KubeGpuCluster, config: EksConfig, lease: LeaseInfo, namespace: str, per_pod: dict[str, int]
) -> dict[str, Any]:
    """Write the lease's ServiceAccount, Role, RoleBinding and LimitRange, issue its token; the access document."""
    issued = grant_tenant_access(kube.api_client, namespace, lease.id, per_pod, token_seconds(lease, config))
    configuration = kube.api_client.configuration
    server = config.tenant_api_url or configuration.host
    doc = kubeconfig(
        config.cluster, server, issued.token, namespace, cluster_ca(configuration), bool(configuration.verify_ssl)
    )
    expires: datetime | None = issued.expires_at
    return {
        "kind": "kubernetes",
        "server": server,
        "namespace": namespace,
        "service_account": ACCOUNT,
        "token": issued.token,
        "token_expires_at": expires.isoformat() if expires is not None else None,
        "kubeconfig": doc,
        "how_to": "Save `kubeconfig` as a file (YAML or JSON) and use it: `kubectl --kubeconfig FILE get pods`; "
        "merge `pod_spec` of the lease's result into your pods. The token works in this namespace only, until the "
        "lease ends",
    }
