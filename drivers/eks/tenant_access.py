"""A lease's own credentials in its tenant namespace: a ServiceAccount, a Role limited to that namespace, its
RoleBinding, a LimitRange, a token from the TokenRequest API, and the kubeconfig that uses it.

The manifests are plain dicts (``tenant_manifests``) so they can be checked against the real Kubernetes schemas
(kubernetes-validate, tests/controller/backends/eks/test_tenant_access.py). The token is bound to the ServiceAccount:
deleting the lease's namespace deletes the ServiceAccount, and the API server refuses the token from then on.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from drivers.eks.errors import KubeError
from drivers.eks.kube_labels import LEASE_LABEL, MANAGED_BY_LABEL

ACCOUNT = "gpufabric-tenant"  # the ServiceAccount, Role and RoleBinding name in every lease namespace
LIMIT_RANGE = "gpufabric-lease"

# What a tenant may do in its namespace: run and watch workloads, keep their config, read its quota.
_WORKLOADS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
_READ = ["get", "list", "watch"]
_CORE_WORKLOADS = ["pods", "pods/log", "pods/exec", "pods/attach", "pods/portforward", "services", "configmaps"]
_CORE_WORKLOADS += ["secrets", "persistentvolumeclaims"]
TENANT_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": _CORE_WORKLOADS, "verbs": _WORKLOADS},
    {"apiGroups": [""], "resources": ["events", "resourcequotas", "limitranges"], "verbs": _READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "replicasets"], "verbs": _WORKLOADS},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": _WORKLOADS},
    {"apiGroups": ["kubeflow.org"], "resources": ["mpijobs"], "verbs": _WORKLOADS},
]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime | None


def tenant_manifests(namespace: str, lease_id: str, per_pod: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The ServiceAccount, Role, RoleBinding and LimitRange of a lease namespace.

    The LimitRange caps one container at the leased resources of one node (``per_pod``) and defaults the GPU
    resources to none, so a container that names no GPU gets none (a missing default would be set to the max)."""
    labels = {MANAGED_BY_LABEL: "gpufabric", LEASE_LABEL: lease_id}

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    amounts = {name: str(count) for name, count in sorted(per_pod.items())}
    zeros = {name: "0" for name in amounts}
    limit: dict[str, Any] = {"type": "Container"}
    if amounts:
        limit.update(max=amounts, default=zeros, defaultRequest=zeros)
    return {
        "service_account": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(ACCOUNT)},
        "role": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(ACCOUNT),
            "rules": TENANT_RULES,
        },
        "role_binding": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(ACCOUNT),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        },
        "limit_range": {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": meta(LIMIT_RANGE),
            "spec": {"limits": [limit]},
        },
    }


def _create_or_replace(what: str, create: Any, replace: Any) -> None:
    try:
        create()
    except ApiException as exc:
        if exc.status != 409:
            raise KubeError(f"create {what}: {exc.status} {exc.reason}", exc.status or 0) from None
        if replace is None:
            return
        try:
            replace()
        except ApiException as again:
            raise KubeError(f"replace {what}: {again.status} {again.reason}", again.status or 0) from None


def grant_tenant_access(
    api_client: k8s.ApiClient, namespace: str, lease_id: str, per_pod: dict[str, int], token_seconds: int
) -> IssuedToken:
    """Write the manifests into ``namespace`` (idempotent: a provision may run again) and issue a token for the
    ServiceAccount valid for ``token_seconds`` (the API server may shorten it)."""
    docs = tenant_manifests(namespace, lease_id, per_pod)
    # The manifests go as the dicts the schema test validates (the client serialises a dict body as it is).
    core: Any = k8s.CoreV1Api(api_client)
    rbac: Any = k8s.RbacAuthorizationV1Api(api_client)
    sa, role, binding, limits = docs["service_account"], docs["role"], docs["role_binding"], docs["limit_range"]
    _create_or_replace(
        f"serviceaccount {namespace}/{ACCOUNT}", lambda: core.create_namespaced_service_account(namespace, sa), None
    )
    _create_or_replace(
        f"role {namespace}/{ACCOUNT}",
        lambda: rbac.create_namespaced_role(namespace, role),
        lambda: rbac.replace_namespaced_role(ACCOUNT, namespace, role),
    )
    _create_or_replace(
        f"rolebinding {namespace}/{ACCOUNT}",
        lambda: rbac.create_namespaced_role_binding(namespace, binding),
        lambda: rbac.replace_namespaced_role_binding(ACCOUNT, namespace, binding),
    )
    _create_or_replace(
        f"limitrange {namespace}/{LIMIT_RANGE}",
        lambda: core.create_namespaced_limit_range(namespace, limits),
        lambda: core.replace_namespaced_limit_range(LIMIT_RANGE, namespace, limits),
    )
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=token_seconds)
    )
    try:
        issued = core.create_namespaced_service_account_token(ACCOUNT, namespace, request)
    except ApiException as exc:
        raise KubeError(f"token for {namespace}/{ACCOUNT}: {exc.status} {exc.reason}", exc.status or 0) from None
    status = issued.status
    if status is None or not status.token:
        raise KubeError(f"token for {namespace}/{ACCOUNT}: the API server returned no token")
    return IssuedToken(status.token, status.expiration_timestamp)


def cluster_ca(configuration: k8s.Configuration) -> str | None:
    """The cluster's CA bundle as a kubeconfig carries it (base64 PEM), from the client configuration."""
    data = getattr(configuration, "ca_cert_data", None)
    if data:
        raw = data.encode() if isinstance(data, str) else data
        return base64.b64encode(raw).decode()
    if configuration.ssl_ca_cert:
        return base64.b64encode(Path(configuration.ssl_ca_cert).read_bytes()).decode()
    return None


def kubeconfig(
    cluster: str, server: str, token: str, namespace: str, ca_data: str | None = None, verify_ssl: bool = True
) -> dict[str, Any]:
    """A kubeconfig (``clientcmd`` v1) with one context: the lease's namespace, as the ServiceAccount."""
    entry: dict[str, Any] = {"server": server}
    if ca_data:
        entry["certificate-authority-data"] = ca_data
    if not verify_ssl:
        entry["insecure-skip-tls-verify"] = True
    user = f"{namespace}-{ACCOUNT}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": namespace, "context": {"cluster": cluster, "user": user, "namespace": namespace}}],
        "current-context": namespace,
        "preferences": {},
    }
