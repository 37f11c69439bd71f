"""The manifests an EKS lease writes in its namespace validate against the real Kubernetes schemas, the Role stays
inside the namespace, and the kubeconfig is one a client loads."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from drivers.eks.kube import kube_configuration
from drivers.eks.tenant_access import cluster_ca, kubeconfig, tenant_manifests

K8S_VERSIONS = ["1.31.0", "1.37.0"]  # as tests/deploy/test_helm_chart.py


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_lease_namespace_manifests_validate(version: str) -> None:
    docs = tenant_manifests(
        "gf-acme-0123456789ab", "0123456789abcdef", {"nvidia.com/gpu": 4, "vpc.amazonaws.com/efa": 1}
    )
    assert set(docs) == {"service_account", "role", "role_binding", "limit_range"}
    for doc in docs.values():
        assert kubernetes_validate.validate(doc, version, strict=True), doc["kind"]
        assert doc["metadata"]["namespace"] == "gf-acme-0123456789ab"
    limits = docs["limit_range"]["spec"]["limits"][0]
    assert limits["max"] == {"nvidia.com/gpu": "4", "vpc.amazonaws.com/efa": "1"}
    assert limits["default"] == limits["defaultRequest"] == {"nvidia.com/gpu": "0", "vpc.amazonaws.com/efa": "0"}
    # A Role (namespaced) bound by a RoleBinding: nothing cluster-wide, no RBAC or namespace rights.
    assert docs["role_binding"]["roleRef"]["kind"] == "Role"
    granted = {r for rule in docs["role"]["rules"] for r in rule["resources"]}
    assert "pods" in granted and not granted & {"roles", "rolebindings", "namespaces", "nodes", "serviceaccounts"}


def test_a_lease_with_no_gpu_resources_gets_a_plain_limit_range() -> None:
    doc = tenant_manifests("gf-acme-x", "x", {})["limit_range"]
    assert doc["spec"]["limits"] == [{"type": "Container"}]
    assert kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_the_kubeconfig_loads_with_the_official_client(tmp_path: Path) -> None:
    doc = kubeconfig("fabric-train", "https://api.example:6443", "tok-123", "gf-acme-x", ca_data="Q0E=")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == "https://api.example:6443"
    assert "tok-123" in str(configuration.api_key) and configuration.ssl_ca_cert
    assert k8s_config.list_kube_config_contexts(config_file=str(path))[1]["context"]["namespace"] == "gf-acme-x"


def test_the_kubeconfig_carries_the_ca_gpufabric_trusts(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    expected = base64.b64encode(pem.encode()).decode()
    assert cluster_ca(kube_configuration("https://api.example", ca_data=pem)) == expected
    assert cluster_ca(kube_configuration("https://api.example", ca_data=expected)) == expected  # EKS's base64 form
    (tmp_path / "ca.crt").write_text(pem)
    assert cluster_ca(kube_configuration("https://api.example", ca_file=tmp_path / "ca.crt")) == expected
    assert cluster_ca(kube_configuration("http://127.0.0.1:8001")) is None
