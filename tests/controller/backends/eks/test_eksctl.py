"""eksctl ClusterConfig import: fields, defaults, errors naming the field, the --json document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from controller.cli import app
from drivers.eks import EksBackendConfig, EksctlConfigError, import_eksctl, parse_eksctl_text
from tests.support.paths import SHARED

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_EKSCTL = SHARED / "testdata" / "eksctl"

NODEGROUP_KEYS = [
    "name",
    "instance_types",
    "min",
    "max",
    "desired",
    "efa",
    "gpus_per_node",
    "gpu_model",
    "availability_zones",
    "labels",
    "taints",
    "capacity",
]


def _doc(body: str) -> str:
    return "apiVersion: eksctl.io/v1alpha5\nkind: ClusterConfig\nmetadata: {name: c, region: us-west-2}\n" + body


def test_managed_groups_with_builtin_facts() -> None:
    config = import_eksctl(FIXTURES / "gpu-cluster.yaml")
    assert (config.cluster, config.region, config.kubernetes_version) == ("fabric-train", "us-east-1", "1.32")
    groups = {ng.name: ng for ng in config.nodegroups}

    l4 = groups["l4-train"]
    assert l4.managed and l4.instance_types == ["g6.12xlarge"]
    assert (l4.min, l4.desired, l4.max) == (0, 2, 4)
    assert l4.efa and l4.efa_interfaces == 1
    assert (l4.gpus_per_node, l4.gpu_model, l4.gpu_memory_mib) == (4, "L4", 22888)
    assert l4.placement_group == "fabric-l4-cluster"
    assert l4.capacity_reservation_id == "cr-0123456789abcdef0"
    assert l4.availability_zones == ["us-east-1a"]
    assert l4.facts_source == "builtin"

    block = groups["h100-block"]
    assert block.capacity_type == "CAPACITY_BLOCK" and (block.gpus_per_node, block.gpu_model) == (8, "H100")
    assert block.taints[0].value is None and block.taints[0].effect == "NoSchedule"

    spot = groups["infer-spot"]
    assert spot.capacity_type == "SPOT" and spot.instance_types == ["g5.xlarge", "g6.xlarge"]
    assert (spot.min, spot.desired, spot.max) == (1, 1, 6)
    # Both types have one GPU but of different models: the count is known, the model is not one.
    assert spot.gpus_per_node == 1 and spot.gpu_model is None
    assert spot.availability_zones == ["us-east-1a", "us-east-1b"]  # inherited from the cluster

    system = groups["system"]
    assert (system.min, system.desired, system.max) == (2, 2, 2)
    assert system.gpus_per_node == 0 and system.gpu_model is None
    assert [ng.name for ng in config.gpu_nodegroups] == ["l4-train", "h100-block", "infer-spot"]


def test_self_managed_instances_distribution_and_map_taints() -> None:
    config = import_eksctl(FIXTURES / "self-managed.yaml")
    mixed, models = config.nodegroups
    assert not mixed.managed and mixed.instance_types == ["g4dn.xlarge", "g4dn.2xlarge"]
    assert (mixed.gpus_per_node, mixed.gpu_model) == (1, "T4")
    assert mixed.capacity_type == "SPOT"
    assert [t.model_dump() for t in mixed.taints] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "dedicated", "value": None, "effect": "NoExecute"},
    ]
    assert mixed.availability_zones == []
    assert (models.gpus_per_node, models.gpu_model) == (4, None)
    assert (models.min, models.desired, models.max) == (1, 1, 1)


def test_unknown_gpu_type_gives_null_not_zero() -> None:
    config = parse_eksctl_text(_doc("managedNodeGroups:\n  - {name: x, instanceType: g99.48xlarge}\n"))
    from drivers.eks.eksctl import to_backend_config

    ng = to_backend_config(config).nodegroups[0]
    assert ng.gpus_per_node is None and ng.gpu_model is None
    cpu = to_backend_config(parse_eksctl_text(_doc("managedNodeGroups:\n  - {name: y, instanceType: c7i.large}\n")))
    assert cpu.nodegroups[0].gpus_per_node == 0


def test_eksctl_defaults_for_sizes_and_instance_type() -> None:
    config = parse_eksctl_text(_doc("managedNodeGroups:\n  - name: plain\n  - {name: only-max, maxSize: 5}\n"))
    plain, only_max = config.nodegroups
    assert plain.instance_types == ["m5.large"] and (plain.min, plain.desired, plain.max) == (2, 2, 2)
    assert (only_max.min, only_max.desired, only_max.max) == (2, 2, 5)


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        (
            "managedNodeGroups:\n  - {name: a, minSize: 3, maxSize: 1}\n",
            "managedNodeGroups[0].minSize",
            "greater than maxSize",
        ),
        (
            "managedNodeGroups:\n  - {name: a, minSize: 1, maxSize: 2, desiredCapacity: 5}\n",
            "managedNodeGroups[0].desiredCapacity",
            "outside",
        ),
        ("managedNodeGroups:\n  - {name: a, maxSize: two}\n", "managedNodeGroups[0].maxSize", "integer"),
        ("nodeGroups:\n  - {name: a, efaEnabled: 'yes'}\n", "nodeGroups[0].efaEnabled", "true or false"),
        ("managedNodeGroups:\n  - {instanceType: g6.xlarge}\n", "managedNodeGroups[0].name", "required"),
        ("managedNodeGroups:\n  - {name: a}\n  - {name: a}\n", "managedNodeGroups[1].name", "already used"),
        (
            "nodeGroups:\n  - {name: a}\nmanagedNodeGroups:\n  - {name: a}\n",
            "managedNodeGroups[0].name",
            "nodeGroups[0]",
        ),
        ("managedNodeGroups:\n  - {name: a, labels: {gpu: true}}\n", "managedNodeGroups[0].labels.gpu", "quote it"),
        (
            "managedNodeGroups:\n  - {name: a, taints: {k: NoSchedule}}\n",
            "managedNodeGroups[0].taints.k",
            "value:Effect",
        ),
        (
            "managedNodeGroups:\n  - {name: a, instanceType: g6.xlarge, instancesDistribution: {instanceTypes: [g5.xlarge]}}\n",
            "managedNodeGroups[0]",
            "only one of",
        ),
        (
            "managedNodeGroups:\n  - {name: a, instanceMarketOptions: {marketType: reserved}}\n",
            "managedNodeGroups[0].instanceMarketOptions.marketType",
            "capacity-block",
        ),
        (
            "managedNodeGroups:\n  - {name: a, capacityReservation: {capacityReservationTarget: {capacityReservationID: 7}}}\n",
            "managedNodeGroups[0].capacityReservation.capacityReservationTarget.capacityReservationID",
            "string",
        ),
        (
            "managedNodeGroups:\n  - {name: a, capacityReservation: {capacityReservationTarget: {capacityReservationID: cr-1,"
            " capacityReservationResourceGroupARN: 'arn:aws:resource-groups:us-west-2:1:group/g'}}}\n",
            "managedNodeGroups[0].capacityReservation.capacityReservationTarget",
            "not both",
        ),
        ("managedNodeGroups: {name: a}\n", "managedNodeGroups", "must be a list"),
        ("availabilityZones: us-east-1a\n", "availabilityZones", "list of strings"),
    ],
)
def test_bad_fields_are_named(body: str, field: str, text: str) -> None:
    with pytest.raises(EksctlConfigError) as error:
        parse_eksctl_text(_doc(body), source="cluster.yaml")
    assert error.value.field == field
    assert text in str(error.value)
    assert str(error.value).startswith(f"cluster.yaml: {field}: ")


def test_wrong_api_version_and_kind() -> None:
    with pytest.raises(EksctlConfigError, match=re.escape("apiVersion: must be 'eksctl.io/v1alpha5'")):
        parse_eksctl_text("apiVersion: eksctl.io/v1alpha4\nkind: ClusterConfig\nmetadata: {name: c}\n")
    with pytest.raises(EksctlConfigError, match="kind: must be 'ClusterConfig'"):
        parse_eksctl_text("apiVersion: eksctl.io/v1alpha5\nkind: Cluster\nmetadata: {name: c}\n")
    with pytest.raises(EksctlConfigError, match=re.escape("metadata.name: is required")):
        parse_eksctl_text("apiVersion: eksctl.io/v1alpha5\nkind: ClusterConfig\nmetadata: {region: r}\n")
    with pytest.raises(EksctlConfigError, match="not valid YAML"):
        parse_eksctl_text("apiVersion: [\n")


def test_backend_config_round_trips_for_the_admin_api() -> None:
    config = import_eksctl(FIXTURES / "gpu-cluster.yaml")
    stored = json.loads(config.model_dump_json())
    assert EksBackendConfig.model_validate(stored) == config


# -- CLI ---------------------------------------------------------------------------------------


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["eks", "import-eksctl", *args])


def test_cli_json_has_exactly_the_documented_shape() -> None:
    result = _cli(str(FIXTURES / "gpu-cluster.yaml"), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["cluster", "region", "nodegroups"]
    for ng in doc["nodegroups"]:
        assert list(ng) == NODEGROUP_KEYS
    first = doc["nodegroups"][0]
    assert first == {
        "name": "l4-train",
        "instance_types": ["g6.12xlarge"],
        "min": 0,
        "max": 4,
        "desired": 2,
        "efa": True,
        "gpus_per_node": 4,
        "gpu_model": "L4",
        "availability_zones": ["us-east-1a"],
        "labels": {"gpufabric.io/pool": "train"},
        "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
        "capacity": {
            "type": "reservation",
            "reservation_id": "cr-0123456789abcdef0",
            "placement_group": "fabric-l4-cluster",
        },
    }
    assert doc["nodegroups"][3]["gpus_per_node"] == 0


def test_cli_dry_run_json_names_each_nodegroups_capacity(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        _doc(
            "managedNodeGroups:\n"
            "  - {name: rg, instanceType: p5.48xlarge, capacityReservation: {capacityReservationTarget:"
            " {capacityReservationResourceGroupARN: 'arn:aws:resource-groups:us-west-2:123456789012:group/p5'}}}\n"
        )
    )
    result = _cli(str(FIXTURES / "gpu-cluster.yaml"), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    capacity = {ng["name"]: ng["capacity"] for ng in json.loads(result.stdout)["nodegroups"]}
    assert capacity == {
        "l4-train": {
            "type": "reservation",
            "reservation_id": "cr-0123456789abcdef0",
            "placement_group": "fabric-l4-cluster",
        },
        "h100-block": {"type": "capacity-block", "reservation_id": "cr-0fedcba9876543210", "placement_group": None},
        "infer-spot": {"type": "spot", "reservation_id": None, "placement_group": None},
        "system": {"type": "on-demand", "reservation_id": None, "placement_group": None},
    }
    by_group = _cli(str(path), "--dry-run", "--json")
    assert by_group.exit_code == 0, by_group.output
    (ng,) = json.loads(by_group.stdout)["nodegroups"]
    assert ng["capacity"] == {"type": "reservation", "reservation_id": None, "placement_group": None}
    assert import_eksctl(path).nodegroups[0].capacity_reservation_resource_group.endswith("group/p5")


def test_cli_region_override_and_table() -> None:
    result = _cli(str(FIXTURES / "gpu-cluster.yaml"), "--json", "--region", "us-west-2")
    assert json.loads(result.stdout)["region"] == "us-west-2"
    table = _cli(str(FIXTURES / "gpu-cluster.yaml"))
    assert table.exit_code == 0 and "l4-train" in table.stdout


def test_cli_errors() -> None:
    bad = _cli(str(FIXTURES / "bad-taint.yaml"), "--json")
    assert bad.exit_code == 2
    assert "managedNodeGroups[1].taints[0].effect" in bad.output
    missing = _cli("/nonexistent/cluster.yaml")
    assert missing.exit_code == 2 and "no such file" in missing.output


# -- third-party files (optional) --------------------------------------------------------------


@pytest.mark.skipif(not SHARED_EKSCTL.is_dir(), reason="../shared/testdata/eksctl is not present")
def test_real_p5_capacity_block_file() -> None:
    config = import_eksctl(SHARED_EKSCTL / "awsome-eks-p5-capacity-block.yaml")
    assert config.cluster == "eks-p5-cbr-vpc"
    (ng,) = config.nodegroups
    assert ng.name == "p5-cbr" and ng.instance_types == ["p5.48xlarge"]
    assert (ng.min, ng.desired, ng.max) == (0, 1, 10)
    assert ng.efa and ng.capacity_type == "CAPACITY_BLOCK"
    assert ng.capacity_reservation_id == "cr-xxxxxxxxxx"
    assert (ng.gpus_per_node, ng.gpu_model) == (8, "H100")
    assert ng.availability_zones == []


@pytest.mark.skipif(not SHARED_EKSCTL.is_dir(), reason="../shared/testdata/eksctl is not present")
def test_real_g4dn_file() -> None:
    result = _cli(str(SHARED_EKSCTL / "nvdocs-amazon-eks-cluster-config-g4dn.yaml"), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["cluster"], doc["region"]) == ("demo-cluster", "us-west-2")
    (ng,) = doc["nodegroups"]
    assert ng["name"] == "demo-gpu-workers" and ng["instance_types"] == ["g4dn.xlarge"]
    assert (ng["min"], ng["desired"], ng["max"]) == (1, 3, 3)
    assert (ng["gpus_per_node"], ng["gpu_model"], ng["efa"]) == (1, "T4", False)
    assert ng["availability_zones"] == []
