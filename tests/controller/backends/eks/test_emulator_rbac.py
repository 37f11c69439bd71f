"""The Kubernetes API emulator's ServiceAccount tokens and namespaced RBAC, through the official client: what a
Role allows (verbs, resources, subresources, resourceNames), 403 for the rest, 401 once the ServiceAccount is gone."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devservices.kube_emulator import KubeEmulator
from drivers.eks.kube import kube_configuration

pytestmark = pytest.mark.integration
RBAC = "rbac.authorization.k8s.io"


def as_account(kube: KubeEmulator, namespace: str, name: str) -> k8s.CoreV1Api:
    admin = k8s.CoreV1Api(k8s.ApiClient(kube_configuration(kube.url)))
    spec = k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    issued = admin.create_namespaced_service_account_token(name, namespace, k8s.AuthenticationV1TokenRequest(spec=spec))
    assert issued.status.token and issued.status.expiration_timestamp is not None
    return k8s.CoreV1Api(k8s.ApiClient(kube_configuration(kube.url, issued.status.token)))


def status_of(call: object) -> int:
    with pytest.raises(ApiException) as refused:
        call()  # type: ignore[operator]
    return int(refused.value.status)


def test_a_role_allows_what_it_names_in_its_namespace_only(kube: KubeEmulator) -> None:
    for ns in ("team-a", "team-b"):
        kube.seed("namespaces", {"metadata": {"name": ns}})
        kube.seed("configmaps", {"metadata": {"name": "settings"}, "data": {"k": "v"}}, namespace=ns)
        kube.seed("configmaps", {"metadata": {"name": "other"}, "data": {}}, namespace=ns)
    kube.seed("serviceaccounts", {"metadata": {"name": "reader"}}, namespace="team-a")
    kube.seed(
        "roles",
        {"metadata": {"name": "reader"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]},
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["list", "get"]},
        ]},
        group=RBAC, namespace="team-a",
    )  # fmt: skip
    kube.seed(
        "rolebindings",
        {"metadata": {"name": "reader"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team-a"}]},
        group=RBAC, namespace="team-a",
    )  # fmt: skip
    core = as_account(kube, "team-a", "reader")

    assert core.read_namespaced_config_map("settings", "team-a").data == {"k": "v"}
    assert core.list_namespaced_pod("team-a").items == []
    assert status_of(lambda: core.read_namespaced_config_map("other", "team-a")) == 403  # not in resourceNames
    assert status_of(lambda: core.list_namespaced_config_map("team-a")) == 403  # get is not list
    assert status_of(lambda: core.read_namespaced_config_map("settings", "team-b")) == 403  # other namespace
    assert status_of(lambda: core.delete_namespaced_config_map("settings", "team-a")) == 403  # verb not granted
    assert status_of(lambda: core.list_node()) == 403  # cluster scope
    assert kube.get("configmaps", "settings", namespace="team-a")  # nothing was deleted

    # The ServiceAccount is deleted: its token is refused as unauthenticated, even where the Role allowed it.
    k8s.CoreV1Api(k8s.ApiClient(kube_configuration(kube.url))).delete_namespaced_service_account("reader", "team-a")
    assert status_of(lambda: core.read_namespaced_config_map("settings", "team-a")) == 401
