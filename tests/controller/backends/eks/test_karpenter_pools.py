"""Karpenter GPU pools in an EKS backend's config: the sync writes each pool's EC2NodeClass and NodePool to the
cluster (validated against the CRD schema subset), replaces them when the pool changes, and a bad pool is refused
with a 422 naming the field, nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from devservices.kube_emulator import KubeEmulator, node_objects
from drivers.eks import builtin_facts
from drivers.eks.karpenter import KarpenterGpuPool, apply_pool
from tests.support.controller import Controller
from tests.support.eks import REGION

pytestmark = pytest.mark.integration

SCHEMAS = yaml.safe_load((Path(__file__).resolve().parent / "fixtures" / "karpenter-crd-subset.yaml").read_text())
POOL = {
    "name": "h100-karpenter",
    "instance_families": ["p5"],
    "capacity_types": ["reserved", "on-demand"],
    "reservations": [{"id": "cr-0123456789abcdef0"}],
    "gpus_per_node": 8,
    "gpu_model": "H100",
    "max_nodes": 4,
    "node_role": "KarpenterNodeRole-fabric",
    "discovery_tag": "fabric-train",
}


def backend(kube: KubeEmulator, pools: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "eks-train",
        "kind": "eks",
        "config": {"cluster": "fabric-train", "region": REGION, "kube_api_url": kube.url, "headroom": False,
                   "nodegroups": [], "karpenter": pools},
    }  # fmt: skip


def test_the_sync_writes_a_pools_nodepool_and_ec2nodeclass(kube: KubeEmulator, controller: Controller) -> None:
    with controller.admin() as api:
        created = api.post("/v1/backends", json=backend(kube, [POOL]))
        assert created.status_code == 201, created.text
        report = api.post("/v1/backends/eks-train/sync").json()
        assert report["errors"] == [], report
        assert report["karpenter"] == {"h100-karpenter": {"EC2NodeClass": "created", "NodePool": "created"}}
        node_pool = kube.get("nodepools", "h100-karpenter", group="karpenter.sh")
        node_class = kube.get("ec2nodeclasses", "h100-karpenter", group="karpenter.k8s.aws")
        expected = KarpenterGpuPool.model_validate(POOL)
        assert node_pool["spec"] == expected.node_pool()["spec"]
        assert node_class["spec"] == expected.node_class()["spec"]
        for kind, obj in (("nodepool", node_pool), ("ec2nodeclass", node_class)):
            stored = {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")}
            jsonschema.Draft202012Validator(SCHEMAS[kind]).validate(stored)

        again = api.post("/v1/backends/eks-train/sync").json()
        assert again["karpenter"] == {"h100-karpenter": {"EC2NodeClass": "unchanged", "NodePool": "unchanged"}}


def test_a_bad_pool_is_refused_naming_the_field(kube: KubeEmulator, controller: Controller) -> None:
    with controller.admin() as api:
        bad = api.post("/v1/backends", json=backend(kube, [{**POOL, "reservations": []}]))
        assert bad.status_code == 422, bad.text
        assert "karpenter" in bad.text and "reservations" in bad.text
        twice = api.post("/v1/backends", json=backend(kube, [POOL, POOL]))
        assert twice.status_code == 422 and "unique" in twice.text
        assert api.get("/v1/backends/eks-train").status_code == 404
    assert kube.list_objects("nodepools", group="karpenter.sh") == []


def test_a_changed_pool_replaces_its_objects(kube: KubeEmulator, kube_cluster: Any) -> None:
    pool = KarpenterGpuPool.model_validate(POOL)
    assert apply_pool(kube_cluster.api_client, pool) == {"EC2NodeClass": "created", "NodePool": "created"}
    grown = pool.model_copy(update={"max_nodes": 6})
    assert apply_pool(kube_cluster.api_client, grown) == {"EC2NodeClass": "unchanged", "NodePool": "updated"}
    assert kube.get("nodepools", "h100-karpenter", group="karpenter.sh")["spec"]["limits"] == {"nvidia.com/gpu": "48"}


def lease(tenant: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The lease as created: 201 ready, 202 not yet, 409 lease-failed (the stored lease is in the problem)."""
    response = tenant.post("/v1/leases", json=body)
    out: dict[str, Any] = response.json()
    if response.status_code == 409 and out.get("type", "").endswith("/lease-failed"):
        return dict(out["lease"])
    assert response.status_code == (201 if out.get("state") == "ready" else 202), response.text
    return out


def karpenter_node(kube: KubeEmulator, pool: str, index: int) -> str:
    """What Karpenter does for a pending pod: a node of the pool registers (no nodegroup label)."""
    (node,) = node_objects(
        "fabric-train", pool, "p5.48xlarge", 1, ["us-east-1a"], REGION, builtin_facts("p5.48xlarge"), start_index=index
    )
    labels = node["metadata"]["labels"]
    del labels["eks.amazonaws.com/nodegroup"]
    labels.update({"karpenter.sh/nodepool": pool, "karpenter.sh/capacity-type": "reserved"})
    kube.add_nodes([node])
    return str(node["metadata"]["name"])


def test_a_lease_on_a_karpenter_pool_scales_it_by_placeholder_pods_up_to_its_limit(
    kube: KubeEmulator, controller: Controller
) -> None:
    kube.seed("namespaces", {"metadata": {"name": "gpufabric"}})
    first = karpenter_node(kube, "h100-karpenter", 0)
    taints = [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "gpufabric.io/tier", "value": "train", "effect": "NoSchedule"},
    ]
    body = backend(kube, [{**POOL, "max_nodes": 2, "taints": taints}])
    body["config"]["headroom"] = True
    whole = {"slices": [{"kind": "gpu", "count": 8, "model": "H100"}], "topology": "same-host"}
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        assert api.post("/v1/backends", json=body).status_code == 201
        report = api.post("/v1/backends/eks-train/sync").json()
        assert report["errors"] == [] and report["nodes"] == [first], report
        assert report["headroom"] == {"karpenter:h100-karpenter": 1}

        on_node = lease(tenant, whole)
        assert on_node["state"] == "ready" and on_node["result"]["host"] == first, on_node

        waiting = lease(tenant, whole)
        assert waiting["state"] == "provisioning", waiting
        assert "waiting for Karpenter NodePool h100-karpenter to start 1 node(s)" in waiting["reason"]
        (pod,) = kube.list_objects("pods", namespace="gpufabric")
        assert pod["metadata"]["labels"]["gpufabric.io/lease"] == waiting["id"]
        assert pod["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "h100-karpenter"}
        assert pod["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "8"}
        assert {"key": "gpufabric.io/tier", "operator": "Equal", "value": "train", "effect": "NoSchedule"} in pod[
            "spec"
        ]["tolerations"]

        api.post("/v1/backends/eks-train/sync")
        at_limit = lease(tenant, whole)
        assert at_limit["state"] == "failed", at_limit
        assert "Karpenter NodePool h100-karpenter is at its limit nvidia.com/gpu=16" in at_limit["reason"]
        assert len(kube.list_objects("pods", namespace="gpufabric")) == 1

        second = karpenter_node(kube, "h100-karpenter", 1)  # Karpenter launched the node for the placeholder
        report = api.post("/v1/backends/eks-train/sync").json()
        assert report["bound"] == {waiting["id"]: second}, report
        ready = tenant.get(f"/v1/leases/{waiting['id']}").json()
        assert ready["state"] == "ready" and ready["result"]["host"] == second, ready
        tolerations = ready["result"]["pod_spec"]["tolerations"]
        assert {
            "key": "gpufabric.io/tier",
            "operator": "Equal",
            "value": "train",
            "effect": "NoSchedule",
        } in tolerations
        assert kube.list_objects("pods", namespace="gpufabric") == []  # the placeholder made way
