"""The agent's systemd unit and Kubernetes manifests, checked by the real tools and schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
SYSTEMD = REPO / "deploy" / "systemd"
K8S = REPO / "deploy" / "kubernetes" / "agent"
K8S_VERSIONS = ["1.30.0", "1.33.0"]


def _docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _unit() -> dict[str, list[str]]:
    """Directive -> values (the unit format allows repeats)."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD / "gpufabric-agent.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also checks that ExecStart's binary exists: point it at this checkout's entry point
    agent_bin = Path(sys.executable).parent / "gpufabric-agent"
    if not agent_bin.exists():
        pytest.skip("gpufabric-agent entry point not installed in this environment")
    unit = tmp_path / "gpufabric-agent.service"
    unit.write_text(
        (SYSTEMD / "gpufabric-agent.service").read_text().replace("/usr/local/bin/gpufabric-agent", str(agent_bin))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "Failed" not in result.stderr, result.stderr


def test_unit_restart_and_sandbox_keep_nvml_working() -> None:
    unit = _unit()
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"][0].split()[1:] == ["run", "--controller", "${GPUFABRIC_CONTROLLER_URL}"]
    assert unit["ProtectSystem"] == ["strict"] and unit["StateDirectory"] == ["gpufabric"]
    assert unit.get("PrivateDevices", ["no"]) == ["no"]
    allowed = " ".join(unit["DeviceAllow"])
    for device in ("/dev/nvidiactl", "char-nvidia-frontend", "char-nvidia-uvm", "char-nvidia-caps"):
        assert device in allowed
    assert unit["EnvironmentFile"] == ["/etc/gpufabric/agent.env"]


def test_env_file_names_the_settings() -> None:
    keys = {
        line.partition("=")[0]
        for line in (SYSTEMD / "gpufabric-agent.env").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {"GPUFABRIC_CONTROLLER_URL", "GPUFABRIC_BOOTSTRAP_TOKEN", "GPUFABRIC_STATE_DIR"} <= keys


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _docs()
    assert {d["kind"] for _, d in docs} >= {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
    for name, doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) is not None, name


def test_schema_check_catches_a_typo() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    (ds,) = [d for _, d in _docs() if d["kind"] == "DaemonSet"]
    ds["spec"]["template"]["spec"]["afinity"] = ds["spec"]["template"]["spec"].pop("affinity")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)


def test_daemonset_targets_gpu_nodes_with_node_name_and_state() -> None:
    (ds,) = [d for _, d in _docs() if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    assert keys == {"nvidia.com/gpu.present", "feature.node.kubernetes.io/pci-10de.present"}
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in pod["tolerations"])
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["command"][:2] == ["gpufabric-agent", "run"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["hostPath"]["path"] == "/var/lib/gpufabric"
    assert pod["serviceAccountName"] == "gpufabric-agent"


def test_rbac_is_least_privilege() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _docs()}
    cluster_rules = docs[("ClusterRole", "gpufabric-agent")]["rules"]
    assert cluster_rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    role = docs[("Role", "gpufabric-agent-config")]
    assert role["metadata"]["namespace"] == "gpufabric"
    assert role["rules"][0]["resources"] == ["configmaps"]
    assert set(role["rules"][0]["verbs"]) <= {"get", "list", "watch"}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = next(d for (k, _), d in docs.items() if k == kind)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpufabric-agent", "namespace": "gpufabric"}]
    assert ("ValidatingAdmissionPolicy", "gpufabric-agent-own-node") in docs
