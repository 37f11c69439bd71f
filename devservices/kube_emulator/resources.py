"""The resource types the emulator serves, the API error (a Status body) and timestamps.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devservices.kube_rbac import RBAC_GROUP


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, short_names=("ns",)),
    ResourceType("", "v1", "nodes", "Node", False, short_names=("no",)),
    ResourceType("", "v1", "pods", "Pod", True, short_names=("po",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, has_status=False, short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, has_status=False),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, has_status=False, short_names=("sa",)),
    ResourceType("", "v1", "services", "Service", True, short_names=("svc",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, short_names=("quota",)),
    ResourceType("", "v1", "limitranges", "LimitRange", True, has_status=False, short_names=("limits",)),
    ResourceType("", "v1", "events", "Event", True, has_status=False, short_names=("ev",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, short_names=("ds",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, short_names=("deploy",)),
    ResourceType("kubeflow.org", "v2beta1", "mpijobs", "MPIJob", True),
    ResourceType(RBAC_GROUP, "v1", "roles", "Role", True, has_status=False),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", True, has_status=False),
    # Karpenter's CRDs: stored as given (no schema validation here; tests validate against their fixture).
    ResourceType("karpenter.sh", "v1", "nodepools", "NodePool", False),
    ResourceType("karpenter.k8s.aws", "v1", "ec2nodeclasses", "EC2NodeClass", False, short_names=("ec2nc",)),
)

RESOURCE_BY_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in RESOURCE_TYPES}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.metadata: dict[str, Any] = {}  # ListMeta of the Status (an expired list's continue token)

    def status_body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
