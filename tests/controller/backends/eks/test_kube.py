"""The official kubernetes client against the emulator: nodes from a moto nodegroup become GPU hosts,
device-plugin sharing config and node labels, tenant namespaces with a ResourceQuota."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch

from devservices.kube_emulator import KubeEmulator, materialize_nodegroup
from drivers.eks import EksNodegroups, KubeError
from drivers.eks.kube import KubeGpuCluster, pod_spec_fragment
from drivers.eks.kube_labels import DEVICE_PLUGIN_CONFIG_LABEL
from drivers.eks.kube_models import DevicePluginSharing, SharedResource
from tests.support.eks import REGION, Cluster, create_gpu_nodegroup

pytestmark = pytest.mark.integration


@pytest.fixture
def l4_nodes(kube: KubeEmulator, nodegroups: EksNodegroups, eks: Any, cluster: Cluster) -> list[dict[str, Any]]:
    create_gpu_nodegroup(eks, cluster, "l4-train", desired=2, max_size=3)
    create_gpu_nodegroup(
        eks, cluster, "h100", instance_type="p5.48xlarge", desired=1, max_size=1, zones=("us-east-1b",)
    )
    materialize_nodegroup(kube, nodegroups, "fabric-train", "h100", REGION)
    return materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)


def test_nodes_of_a_moto_nodegroup_become_gpu_hosts(
    l4_nodes: list[dict[str, Any]], kube_cluster: KubeGpuCluster
) -> None:
    hosts = kube_cluster.list_gpu_hosts(nodegroup="l4-train")
    assert len(hosts) == 2
    host = hosts[0]
    assert host.nodegroup == "l4-train" and host.instance_type == "g6.12xlarge"
    assert host.gpus == 4 and host.gpus_allocatable == 4 and host.efa == 1
    assert host.gpu_product == "NVIDIA-L4" and host.gpu_count == 4 and host.gpu_memory_mib == 22888
    assert host.zone == "us-east-1a" and host.ready
    assert len(host.network_layers) == 3
    assert host.labels["gpufabric.io/pool"] == "train"
    assert [t.key for t in host.taints] == ["nvidia.com/gpu"]

    everything = kube_cluster.list_gpu_hosts()
    h100 = [h for h in everything if h.nodegroup == "h100"]
    assert len(h100) == 1 and h100[0].gpus == 8 and h100[0].efa == 32 and h100[0].zone == "us-east-1b"


def test_scaling_in_moto_changes_the_nodes(
    l4_nodes: list[dict[str, Any]], kube: KubeEmulator, nodegroups: EksNodegroups, kube_cluster: KubeGpuCluster
) -> None:
    assert nodegroups.scale_up("fabric-train", "l4-train", 1).changed
    materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
    assert len(kube_cluster.list_gpu_hosts(nodegroup="l4-train")) == 3
    assert nodegroups.scale_down("fabric-train", "l4-train", 2).desired == 1
    materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
    assert len(kube_cluster.list_gpu_hosts(nodegroup="l4-train")) == 1


def test_sharing_config_and_node_label(
    l4_nodes: list[dict[str, Any]], kube: KubeEmulator, kube_cluster: KubeGpuCluster
) -> None:
    kube.seed("namespaces", {"metadata": {"name": "gpu-operator"}})
    sharing = DevicePluginSharing(strategy="time-slicing", resources=[SharedResource(replicas=4)])
    applied = kube_cluster.apply_sharing_config("l4-train", "l4-ts4", sharing)
    assert len(applied.nodes_labelled) == 2

    mps = DevicePluginSharing(strategy="mps", resources=[SharedResource(replicas=2)])
    kube_cluster.apply_sharing_config("h100", "h100-mps2", mps)

    configmap = kube.get("configmaps", "gpufabric-device-plugin-configs", namespace="gpu-operator")
    assert set(configmap["data"]) == {"l4-ts4", "h100-mps2"}
    assert yaml.safe_load(configmap["data"]["l4-ts4"])["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]
    assert yaml.safe_load(configmap["data"]["h100-mps2"])["sharing"]["mps"]["resources"][0]["replicas"] == 2
    labels = {h.name: h.device_plugin_config for h in kube_cluster.list_gpu_hosts()}
    assert sorted(labels.values()) == ["h100-mps2", "l4-ts4", "l4-ts4"]

    kube_cluster.remove_sharing_config("l4-train", "l4-ts4")
    configmap = kube.get("configmaps", "gpufabric-device-plugin-configs", namespace="gpu-operator")
    assert set(configmap["data"]) == {"h100-mps2"}
    assert [h.device_plugin_config for h in kube_cluster.list_gpu_hosts(nodegroup="l4-train")] == [None, None]
    assert (
        DEVICE_PLUGIN_CONFIG_LABEL
        not in kube.list_objects("nodes", label_selector="eks.amazonaws.com/nodegroup=l4-train")[0]["metadata"][
            "labels"
        ]
    )


def test_sharing_config_needs_the_operator_namespace(
    l4_nodes: list[dict[str, Any]], kube_cluster: KubeGpuCluster
) -> None:
    sharing = DevicePluginSharing(strategy="time-slicing", resources=[SharedResource(replicas=2)])
    with pytest.raises(KubeError, match="404"):
        kube_cluster.apply_sharing_config("l4-train", "ts2", sharing, namespace="no-such-namespace")


def test_tenant_namespace_quota_and_cleanup(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    access = kube_cluster.create_tenant_namespace(
        "lease-7f3a", {"nvidia.com/gpu": 4, "vpc.amazonaws.com/efa": 1}, lease_id="7f3a"
    )
    assert access.hard == {"requests.nvidia.com/gpu": "4", "requests.vpc.amazonaws.com/efa": "1"}
    quota = kube.get("resourcequotas", "gpufabric-lease", namespace="lease-7f3a")
    assert quota["spec"]["hard"] == access.hard
    namespace = kube.get("namespaces", "lease-7f3a")
    assert namespace["metadata"]["labels"]["gpufabric.io/lease"] == "7f3a"

    # Idempotent: a retried lease provisioning replaces the quota.
    kube_cluster.create_tenant_namespace("lease-7f3a", {"nvidia.com/gpu": 8}, lease_id="7f3a")
    assert kube.get("resourcequotas", "gpufabric-lease", namespace="lease-7f3a")["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "8"
    }

    kube_cluster.delete_tenant_namespace("lease-7f3a")
    assert kube.list_objects("namespaces", label_selector="gpufabric.io/lease=7f3a") == []
    assert kube.list_objects("resourcequotas", namespace="lease-7f3a") == []
    kube_cluster.delete_tenant_namespace("lease-7f3a")  # releasing twice is fine


def test_pod_spec_fragment_schedules_onto_the_lease(
    l4_nodes: list[dict[str, Any]], kube_cluster: KubeGpuCluster
) -> None:
    host = kube_cluster.list_gpu_hosts(nodegroup="l4-train")[0]
    fragment = pod_spec_fragment(
        {"nvidia.com/gpu": 4, "vpc.amazonaws.com/efa": 1},
        nodegroup="l4-train",
        zone=host.zone,
        placement_group="fabric-l4-cluster",
        taints=host.taints,
    )
    terms = fragment["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
    assert keys["eks.amazonaws.com/nodegroup"] == ["l4-train"]
    assert keys["topology.kubernetes.io/zone"] == ["us-east-1a"]
    assert keys["gpufabric.io/placement-group"] == ["fabric-l4-cluster"]
    assert fragment["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert fragment["containerResources"]["limits"] == {"nvidia.com/gpu": "4", "vpc.amazonaws.com/efa": "1"}
    # The fragment is a valid pod spec once merged: the emulator stores it and the client reads it back.
    core = k8s.CoreV1Api(kube_cluster.api_client)
    pod = {
        "metadata": {"name": "trainer"},
        "spec": {
            "affinity": fragment["affinity"],
            "tolerations": fragment["tolerations"],
            "containers": [{"name": "main", "image": "nccl-tests", "resources": fragment["containerResources"]}],
        },
    }
    created = core.create_namespaced_pod("default", pod)
    assert created.spec.containers[0].resources.limits == {"nvidia.com/gpu": "4", "vpc.amazonaws.com/efa": "1"}


# -- emulator behaviour the client relies on ---------------------------------------------------


def test_emulator_metadata_conflicts_and_patches(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    core = k8s.CoreV1Api(kube_cluster.api_client)
    body = {"metadata": {"name": "cfg", "labels": {"app": "a"}}, "data": {"k": "v"}}
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    with pytest.raises(k8s.exceptions.ApiException) as conflict:
        core.create_namespaced_config_map("default", body)
    assert conflict.value.status == 409 and '"reason": "AlreadyExists"' in (conflict.value.body or "")

    stale = created.metadata.resource_version
    patched = core.patch_namespaced_config_map("cfg", "default", {"data": {"k2": "v2"}})
    assert patched.data == {"k": "v", "k2": "v2"} and patched.metadata.resource_version != stale
    json_patched = core.patch_namespaced_config_map(
        "cfg", "default", [{"op": "remove", "path": "/data/k"}], _content_type="application/json-patch+json"
    )
    assert json_patched.data == {"k2": "v2"}

    replacement = core.read_namespaced_config_map("cfg", "default")
    replacement.data = {"only": "this"}
    replaced = core.replace_namespaced_config_map("cfg", "default", replacement)
    assert replaced.data == {"only": "this"} and replaced.metadata.uid == created.metadata.uid
    replacement.metadata.resource_version = stale
    with pytest.raises(k8s.exceptions.ApiException) as outdated:
        core.replace_namespaced_config_map("cfg", "default", replacement)
    assert outdated.value.status == 409

    core.create_namespaced_config_map("default", {"metadata": {"name": "other", "labels": {"app": "b"}}})
    assert [c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="app in (a)").items] == [
        "cfg"
    ]
    assert [c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="app!=a").items] == [
        "other"
    ]
    assert [
        c.metadata.name for c in core.list_namespaced_config_map("default", field_selector="metadata.name=other").items
    ] == ["other"]

    with pytest.raises(k8s.exceptions.ApiException) as missing:
        core.read_namespaced_config_map("ghost", "default")
    assert missing.value.status == 404


def test_emulator_watch_honours_timeout_and_selectors(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    core = k8s.CoreV1Api(kube_cluster.api_client)
    core.create_namespaced_config_map("default", {"metadata": {"name": "before", "labels": {"w": "yes"}}})
    version = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "after", "labels": {"w": "yes"}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "ignored", "labels": {"w": "no"}}})
    core.delete_namespaced_config_map("after", "default")

    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            label_selector="w=yes",
            resource_version=version,
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "after"), ("DELETED", "after")]
    assert 0.9 <= time.monotonic() - started < 5


def test_emulator_pods_logs_and_mpijob_status(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    core = k8s.CoreV1Api(kube_cluster.api_client)
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "launcher"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )
    kube.set_pod_log("default", "launcher", "#  Avg bus bandwidth    : 42.1\n")
    assert core.read_namespaced_pod_log("launcher", "default") == "#  Avg bus bandwidth    : 42.1\n"

    custom = k8s.CustomObjectsApi(kube_cluster.api_client)
    job = {
        "apiVersion": "kubeflow.org/v2beta1",
        "kind": "MPIJob",
        "metadata": {"name": "nccl"},
        "spec": {"slotsPerWorker": 4},
    }
    custom.create_namespaced_custom_object("kubeflow.org", "v2beta1", "default", "mpijobs", job)
    kube.set_mpijob_status("default", "nccl", {"conditions": [{"type": "Succeeded", "status": "True"}]})
    stored = custom.get_namespaced_custom_object("kubeflow.org", "v2beta1", "default", "mpijobs", "nccl")
    assert stored["status"]["conditions"][0]["type"] == "Succeeded"
    assert stored["metadata"]["generation"] == 1
    # Status belongs to the status subresource: a spec update keeps it.
    stored["spec"]["slotsPerWorker"] = 8
    stored["status"] = {}
    updated = custom.replace_namespaced_custom_object("kubeflow.org", "v2beta1", "default", "mpijobs", "nccl", stored)
    assert updated["status"]["conditions"][0]["type"] == "Succeeded" and updated["metadata"]["generation"] == 2

    apps = k8s.AppsV1Api(kube_cluster.api_client)
    ds = {
        "metadata": {"name": "gpufabric-agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "x"}]},
            },
        },
    }
    apps.create_namespaced_daemon_set("kube-system", ds)
    assert [d.metadata.name for d in apps.list_namespaced_daemon_set("kube-system").items] == ["gpufabric-agent"]
    version = k8s.VersionApi(kube_cluster.api_client).get_code()
    assert version.major == "1"
