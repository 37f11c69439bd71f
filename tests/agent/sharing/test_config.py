"""Device-plugin config parsing and validation, rule by rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.sharing import SharingConfigError, load_config_file, load_configs, select_config, to_configmap
from tests.support.paths import SHARED


def _ts(resources: str, extra: str = "") -> str:
    return f"version: v1\n{extra}sharing:\n  timeSlicing:\n    resources: {resources}\n"


def test_raw_time_slicing_config() -> None:
    configs = load_configs(_ts("[{name: nvidia.com/gpu, replicas: 4}]"))
    assert list(configs) == ["default"]
    cfg = configs["default"]
    assert cfg.strategy == "time-slicing"
    assert cfg.replicated is not None and cfg.replicated.resources[0].devices == "all"
    assert cfg.replicated.rename_by_default is False


def test_mps_config_strategy() -> None:
    cfg = load_configs(
        "version: v1\nsharing: {mps: {renameByDefault: true, resources: [{name: nvidia.com/gpu, replicas: 10}]}}"
    )["default"]
    assert cfg.strategy == "mps"
    assert cfg.replicated is not None and cfg.replicated.rename_by_default is True


def test_no_sharing_is_strategy_none() -> None:
    assert load_configs("version: v1\nflags: {migStrategy: single}\n")["default"].strategy == "none"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            _ts("[{name: nvidia.com/gpu, replicas: 1}]"),
            "sharing.timeSlicing.resources[0].replicas: number of replicas must be >= 2",
        ),
        (_ts("[{name: nvidia.com/gpu}]"), "sharing.timeSlicing.resources[0].replicas: required field is missing"),
        (_ts("[{name: nvidia.com/gpux, replicas: 2}]"), "sharing.timeSlicing.resources[0].name: unknown resource name"),
        (_ts("[{name: amd.com/gpu, replicas: 2}]"), "resources[0].name: unknown resource name 'amd.com/gpu'"),
        (_ts("[{name: nvidia.com/mig-1g, replicas: 2}]"), "resources[0].name: unknown resource name"),
        (_ts("[]"), "sharing.timeSlicing.resources: no resources specified"),
        (
            _ts("[{name: nvidia.com/gpu, replicas: 2, devices: 0}]"),
            "resources[0].devices: device count must be from 1 to 256",
        ),
        (_ts("[{name: nvidia.com/gpu, replicas: 2, devices: []}]"), "resources[0].devices: device list is empty"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2, devices: [gpu0]}]"), "unrecognised device reference 'gpu0'"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2, devices: [0, 0]}]"), "names the same device twice"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2, devices: some}]"), "resources[0].devices"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2}, {name: nvidia.com/gpu, replicas: 3}]"), "listed twice"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2, colour: red}]"), "resources[0].colour: unknown key"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2}]", "bogus: 1\n"), "bogus: unknown key"),
        (_ts("[{name: nvidia.com/gpu, replicas: 2}]", "flags: {migStrategy: half}\n"), "flags.migStrategy"),
        (
            _ts("[{name: nvidia.com/gpu, replicas: 2}]", "flags: {plugin: {deviceListStrategy: pipes}}\n"),
            "deviceListStrategy",
        ),
        ("version: v2\n", "version: Input should be 'v1'"),
        ("flags: {}\n", "version: required field is missing"),
        (
            "version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2}]}, "
            "mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}",
            "timeSlicing and mps are mutually exclusive",
        ),
        (
            "version: v1\nsharing: {mps: {resources: [{name: nvidia.com/mig-1g.5gb, replicas: 2}]}}",
            "sharing.mps.resources[0].name: MPS is only supported for 'nvidia.com/gpu'",
        ),
        (
            "version: v1\nflags: {migStrategy: mixed}\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}",
            "flags.migStrategy: MPS sharing is not supported with MIG",
        ),
        (
            _ts("[{name: nvidia.com/mig-1g.5gb, replicas: 2}]", "flags: {migStrategy: single}\n"),
            "sharing.timeSlicing.resources[0].name: 'nvidia.com/mig-1g.5gb' exists only with migStrategy mixed",
        ),
        ("- just\n- a list\n", "expected a mapping"),
        ("version: [unclosed\n", "not valid YAML"),
        ("", "holds no config"),
    ],
)
def test_invalid_configs_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(SharingConfigError) as exc:
        load_configs(text)
    assert fragment in str(exc.value)
    assert str(exc.value).startswith(("config 'default'", "not valid YAML", "the file holds"))


@pytest.mark.parametrize(
    "devices",
    ["all", 2, [0, 1], ["0:1", "1:0"], ["GPU-8a3c7c8e-1111-2222-3333-444455556666"], ["MIG-GPU-abc/1/0"]],
)
def test_device_references_accepted(devices: object) -> None:
    text = yaml.safe_dump(
        {
            "version": "v1",
            "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": devices}]}},
        }
    )
    cfg = load_configs(text)["default"]
    assert cfg.replicated is not None


def test_known_mig_resource_names_with_mixed_strategy() -> None:
    names = ["nvidia.com/mig-1g.5gb", "nvidia.com/mig-1g.5gb.me", "nvidia.com/mig-1c.2g.10gb", "nvidia.com/mig-3g.40gb"]
    resources = [{"name": n, "replicas": 2} for n in names]
    data = {"version": "v1", "flags": {"migStrategy": "mixed"}, "sharing": {"timeSlicing": {"resources": resources}}}
    cfg = load_configs(yaml.safe_dump(data))["default"]
    assert cfg.replicated is not None and [r.name for r in cfg.replicated.resources] == names


def test_configmap_with_named_configs_and_round_trip() -> None:
    a = load_configs(_ts("[{name: nvidia.com/gpu, replicas: 4}]"))["default"]
    b = load_configs("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}")["default"]
    text = to_configmap({"l4": a, "h100-mps": b}, "sharing", namespace="gpufabric")
    doc = yaml.safe_load(text)
    assert doc["kind"] == "ConfigMap" and set(doc["data"]) == {"l4", "h100-mps"}
    again = load_configs(text)
    assert again["l4"] == a and again["h100-mps"] == b
    assert select_config(again, "l4") == ("l4", a)
    with pytest.raises(SharingConfigError, match="several configs"):
        select_config(again, None)
    with pytest.raises(SharingConfigError, match="no config named 'x'"):
        select_config(again, "x")


def test_configmap_bad_entry_names_the_config() -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"bad-one": _ts("[{name: nvidia.com/gpu, replicas: 1}]")},
        }
    )
    with pytest.raises(SharingConfigError, match=r"config 'bad-one': sharing\.timeSlicing\.resources\[0\]\.replicas"):
        load_configs(text)


def test_to_yaml_is_camel_case_and_reloads() -> None:
    cfg = load_configs(
        _ts(
            '[{name: nvidia.com/gpu, replicas: 4, devices: [0, "1:0"]}]',
            "flags: {migStrategy: mixed, failOnInitError: true}\n",
        )
    )["default"]
    out = yaml.safe_load(cfg.to_yaml())
    assert out["flags"] == {"migStrategy": "mixed", "failOnInitError": True}
    assert out["sharing"]["timeSlicing"]["resources"][0]["devices"] == ["0", "1:0"]
    assert load_configs(cfg.to_yaml())["default"] == cfg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SharingConfigError, match="cannot read"):
        load_config_file(tmp_path / "nope.yaml")


# --- optional: real third-party configs (never copied into the repo) --------------------------

TESTDATA = SHARED / "testdata" / "device-plugin"


@pytest.mark.skipif(not TESTDATA.exists(), reason="../shared/testdata not present")
def test_gpu_operator_raw_config() -> None:
    configs = load_config_file(TESTDATA / "gpuop-tests-plugin-config-raw.yaml")
    cfg = configs["default"]
    assert cfg.strategy == "time-slicing" and cfg.flags is None
    assert cfg.replicated is not None
    assert cfg.replicated.rename_by_default is False
    assert cfg.replicated.fail_requests_greater_than_one is None
    assert [(r.name, r.replicas) for r in cfg.replicated.resources] == [("nvidia.com/gpu", 10)]


@pytest.mark.skipif(not TESTDATA.exists(), reason="../shared/testdata not present")
def test_nvidia_docs_fine_grained_configmap() -> None:
    configs = load_config_file(TESTDATA / "nvdocs-time-slicing-config-fine-cm.yaml")
    assert set(configs) == {"a100-40gb", "tesla-t4"}
    a100 = configs["a100-40gb"]
    assert a100.mig_strategy == "mixed"
    assert a100.replicated is not None
    assert [(r.name, r.replicas) for r in a100.replicated.resources] == [
        ("nvidia.com/gpu", 8),
        ("nvidia.com/mig-1g.5gb", 2),
        ("nvidia.com/mig-2g.10gb", 2),
        ("nvidia.com/mig-3g.20gb", 3),
        ("nvidia.com/mig-7g.40gb", 7),
    ]
    t4 = configs["tesla-t4"]
    assert t4.mig_strategy == "none"
    assert t4.replicated is not None and t4.replicated.resources[0].replicas == 4
