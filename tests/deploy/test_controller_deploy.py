"""The controller's Kubernetes manifests (schema-checked, RBAC exactly what the controller calls) and the
example eksctl GPU cluster, read by `gpufabric eks import-eksctl --json`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli import app
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
K8S = REPO / "deploy" / "kubernetes" / "controller"
EKSCTL = REPO / "deploy" / "eksctl" / "gpu-cluster.yaml"
K8S_VERSIONS = ["1.30.0", "1.33.0"]


def _docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _docs()
    assert {d["kind"] for _, d in docs} >= {
        "Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    }  # fmt: skip
    for name, doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) is not None, name


def test_rbac_is_what_the_controller_calls() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _docs()}
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in docs[("ClusterRole", "gpufabric-controller")]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "namespaces"): {"create", "list", "delete"},
        ("", "resourcequotas"): {"create", "update", "delete"},
        ("kubeflow.org", "mpijobs"): {"create", "get", "list", "delete"},
        ("karpenter.sh", "nodepools"): {"get", "create", "update"},
        ("karpenter.k8s.aws", "ec2nodeclasses"): {"get", "create", "update"},
        ("", "pods"): {"list"},
        ("", "pods/log"): {"get"},
    }
    role = docs[("Role", "gpufabric-controller-device-plugin")]
    assert role["metadata"]["namespace"] == "gpu-operator"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}]
    placeholders = docs[("Role", "gpufabric-controller-karpenter-placeholders")]
    assert placeholders["metadata"]["namespace"] == "gpufabric"
    assert placeholders["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "list", "delete"]}]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = next(d for (k, _), d in docs.items() if k == kind)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gpufabric-controller", "namespace": "gpufabric"}
        ]
    assert not any("secrets" in str(d.get("rules")) or "*" in str(d.get("rules")) for _, d in _docs())


def test_deployment_serves_the_api_behind_the_service() -> None:
    docs = {d["kind"]: d for _, d in _docs()}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpufabric-controller"
    (container,) = pod["containers"]
    assert container["command"][:3] == ["gpufabric", "controller", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["initContainers"][0]["command"] == ["gpufabric", "controller", "db", "upgrade"]
    service = docs["Service"]
    assert service["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_example_eksctl_cluster_imports() -> None:
    result = CliRunner().invoke(app, ["eks", "import-eksctl", str(EKSCTL), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cluster"] == "fabric-train" and doc["region"] == "us-east-1"
    groups = {g["name"]: g for g in doc["nodegroups"]}
    train = groups["l4-train"]
    assert train["instance_types"] == ["g6.12xlarge"] and train["efa"] is True
    assert (train["gpus_per_node"], train["gpu_model"]) == (4, "L4")
    assert (train["min"], train["desired"], train["max"]) == (0, 1, 3)
    assert train["availability_zones"] == ["us-east-1a"]
    assert groups["system"]["gpus_per_node"] == 0
    assert groups["l4-shared"]["gpus_per_node"] == 1
    raw = yaml.safe_load(EKSCTL.read_text())
    placement = next(g for g in raw["managedNodeGroups"] if g["name"] == "l4-train")["placement"]
    assert placement == {"groupName": "fabric-train-l4"}
    assert "capacityReservationID" in EKSCTL.read_text()  # the reserved-capacity option, commented
