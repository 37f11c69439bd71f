"""Karpenter NodePool and EC2NodeClass objects for a GPU pool, validated against the CRD schema subset in
fixtures/karpenter-crd-subset.yaml (JSON Schema), and the pool's room under its GPU limit."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from drivers.eks.karpenter import KarpenterGpuPool, gpu_room

SCHEMAS = yaml.safe_load((Path(__file__).parent / "fixtures" / "karpenter-crd-subset.yaml").read_text())


def validate(kind: str, obj: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[kind]).validate(obj)


def pool(**overrides: Any) -> KarpenterGpuPool:
    base: dict[str, Any] = {
        "name": "h100-train",
        "instance_families": ["p5"],
        "capacity_types": ["reserved", "on-demand"],
        "reservations": [{"id": "cr-0123456789abcdef0"}, {"tags": {"team": "ml"}, "owner_id": "123456789012"}],
        "gpus_per_node": 8,
        "gpu_model": "H100",
        "max_nodes": 4,
        "node_role": "KarpenterNodeRole-fabric",
        "discovery_tag": "fabric-train",
        "availability_zones": ["us-east-1a"],
        "labels": {"gpufabric.io/tier": "train"},
    }
    return KarpenterGpuPool.model_validate({**base, **overrides})


def test_objects_for_a_reserved_gpu_pool_validate_against_the_crds() -> None:
    p = pool()
    node_pool, node_class = p.node_pool(), p.node_class()
    validate("nodepool", node_pool)
    validate("ec2nodeclass", node_class)
    spec = node_pool["spec"]
    assert spec["limits"] == {"nvidia.com/gpu": "32"}
    reqs = {r["key"]: r["values"] for r in spec["template"]["spec"]["requirements"]}
    assert reqs["karpenter.sh/capacity-type"] == ["on-demand", "reserved"]
    assert reqs["karpenter.k8s.aws/instance-family"] == ["p5"]
    assert reqs["topology.kubernetes.io/zone"] == ["us-east-1a"]
    assert spec["template"]["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert spec["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "h100-train",
    }
    assert node_class["spec"]["capacityReservationSelectorTerms"] == [
        {"id": "cr-0123456789abcdef0"},
        {"tags": {"team": "ml"}, "ownerID": "123456789012"},
    ]
    spot = pool(capacity_types=["spot"], reservations=[], instance_families=[], instance_types=["g6.12xlarge"])
    validate("nodepool", spot.node_pool())
    validate("ec2nodeclass", spot.node_class())
    assert "capacityReservationSelectorTerms" not in spot.node_class()["spec"]


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("nodepool", ["spec", "template", "spec", "requirements", 0, "operator"], "Equals"),
        ("nodepool", ["spec", "template", "spec", "requirements", 0, "values"], []),
        ("nodepool", ["spec", "template", "spec", "requirements", 0, "values"], ["reserved-capacity"]),
        ("nodepool", ["spec", "template", "spec", "taints", 0, "effect"], "NoScheduled"),
        ("nodepool", ["spec", "limits", "nvidia.com/gpu"], "32 GPUs"),
        ("nodepool", ["spec", "template", "metadata", "labels", "karpenter.sh/nodepool"], "x"),
        ("ec2nodeclass", ["spec", "instanceProfile"], "also-a-profile"),
        ("ec2nodeclass", ["spec", "capacityReservationSelectorTerms", 0, "id"], "odcr-1"),
        ("ec2nodeclass", ["spec", "capacityReservationSelectorTerms", 0, "tags"], {"a": "b"}),
        ("ec2nodeclass", ["spec", "amiSelectorTerms", 0, "alias"], "ubuntu@latest"),
    ],
)
def test_the_schema_refuses_what_karpenter_would(kind: str, path: list[Any], value: Any) -> None:
    """The fixture is not vacuous: each of these edits makes a valid object invalid."""
    p = pool()
    obj = copy.deepcopy(p.node_pool() if kind == "nodepool" else p.node_class())
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(kind, obj)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "H100_train"}, "name"),
        ({"instance_families": ["p5.48xlarge"]}, "instance_families"),
        ({"instance_families": [], "instance_types": []}, "instance_families or instance_types"),
        ({"capacity_types": ["on-demand"]}, "capacity_types"),
        ({"reservations": []}, "reservations"),
        ({"reservations": [{"id": "cr-1", "tags": {"a": "b"}}]}, "not both"),
        ({"reservations": [{"id": "odcr-1"}]}, "id"),
        ({"max_nodes": 0}, "max_nodes"),
        ({"ami_alias": "ubuntu@latest"}, "ami_alias"),
    ],
)
def test_bad_pools_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        pool(**overrides)
    assert field in str(err.value)


def test_room_under_the_gpu_limit() -> None:
    p = pool()
    assert gpu_room(p, 1) == (3, None)
    room, reason = gpu_room(p, 4)
    assert room == 0
    assert reason == "Karpenter NodePool h100-train is at its limit nvidia.com/gpu=32 (4 of 4 nodes of 8 GPUs)"
