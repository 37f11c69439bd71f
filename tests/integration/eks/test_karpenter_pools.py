"""Karpenter GPU pools in an EKS backend's config: the sync writes each pool's EC2NodeClass and NodePool to the
cluster (validated against the CRD schema subset), replaces them when the pool changes, and a bad pool is refused
with a 422 naming the field, nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from drivers.eks.karpenter import KarpenterGpuPool, apply_pool
from tests.controller.conftest import Controller
from tests.integration.eks.conftest import REGION
from tests.services.kube_emulator import KubeEmulator

pytestmark = pytest.mark.integration

SCHEMAS = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "unit" / "eks" / "fixtures" / "karpenter-crd-subset.yaml").read_text()
)
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
