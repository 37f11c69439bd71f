"""Small pieces: network figures, taints, the device-plugin config, the pod spec fragment, client config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivers.eks import Taint, parse_network_gbps
from drivers.eks.kube import kube_configuration, kube_configuration_from_file, pod_spec_fragment, quota_hard
from drivers.eks.kube_models import DevicePluginSharing, SharedResource


@pytest.mark.parametrize(
    ("text", "gbps"),
    [
        ("40 Gigabit", 40),
        ("Up to 25 Gigabit", 25),
        ("4x 100 Gigabit", 400),
        ("3200 Gigabit", 3200),
        ("100 Megabit", 0.1),
        ("Moderate", None),
        (None, None),
    ],
)
def test_network_gbps(text: str | None, gbps: float | None) -> None:
    assert parse_network_gbps(text) == gbps


def test_taint_spellings() -> None:
    taint = Taint.from_eks({"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"})
    assert taint == Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")
    assert taint.to_eks() == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    assert Taint(key="k", effect="NoExecute").toleration() == {"key": "k", "operator": "Exists", "effect": "NoExecute"}


def test_device_plugin_time_slicing_yaml() -> None:
    sharing = DevicePluginSharing(strategy="time-slicing", resources=[SharedResource(replicas=4)])
    assert yaml.safe_load(sharing.to_yaml()) == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": False,
                "resources": [{"name": "nvidia.com/gpu", "replicas": 4}],
            }
        },
    }


def test_device_plugin_mps_with_mig() -> None:
    sharing = DevicePluginSharing(
        strategy="mps",
        mig_strategy="mixed",
        resources=[SharedResource(name="nvidia.com/mig-1g.10gb", replicas=2, devices="all")],
    )
    doc = sharing.to_plugin_config()
    assert doc["flags"]["migStrategy"] == "mixed"
    assert doc["sharing"]["mps"]["resources"] == [{"name": "nvidia.com/mig-1g.10gb", "replicas": 2, "devices": "all"}]
    with pytest.raises(ValueError):
        SharedResource(replicas=1)


def test_quota_keys_use_requests_prefix() -> None:
    assert quota_hard({"nvidia.com/mig-1g.10gb": 2, "nvidia.com/gpu": 1}) == {
        "requests.nvidia.com/gpu": "1",
        "requests.nvidia.com/mig-1g.10gb": "2",
    }


def test_pod_spec_fragment_adds_gpu_toleration_and_pins_nodes() -> None:
    fragment = pod_spec_fragment({"nvidia.com/mig-1g.10gb": 1}, node_names=["n2", "n1"])
    expressions = fragment["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions == [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]
    assert fragment["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "affinity" not in pod_spec_fragment({"cpu": 1})


def test_client_configuration_is_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A $KUBECONFIG pointing elsewhere must not leak in.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    configuration = kube_configuration("https://api.example:6443/", token="t0k")
    assert configuration.host == "https://api.example:6443"
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer t0k"

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "abc"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    from_file = kube_configuration_from_file(kubeconfig)
    assert from_file.host == "http://127.0.0.1:1"
    assert from_file.get_api_key_with_prefix("BearerToken") == "Bearer abc"


def test_eks_token_is_a_presigned_sts_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    import boto3

    from drivers.eks.kube import eks_token

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    token = eks_token(boto3.session.Session(), "fabric-train", "us-east-1")
    assert token.startswith("k8s-aws-v1.")
    payload = token[len("k8s-aws-v1.") :]
    url = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert url.startswith("https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity")
    assert "x-k8s-aws-id" in url
