"""mig-parted config files: raw, ConfigMap-wrapped, multi-document, and refused shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.mig.config import MigConfigError, load_mig_config, parse_mig_config
from tests.support.mig_builders import MIG_PARTED_SAMPLES

RAW = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-enabled:
    - devices: all
      mig-enabled: true
      mig-devices: {}
  all-balanced:
    - device-filter: ["0x20B010DE", "0x20b110de"]
      devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
    - device-filter: "0x233010DE"
      devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
  custom:
    - devices: [0, 1]
      mig-enabled: false
    - devices: [2]
      mig-enabled: true
      mig-devices:
        "1g.5gb+me": 1
        "1g.5gb": 6
"""


def _indent(text: str, by: int) -> str:
    return "".join(" " * by + line if line.strip() else line for line in text.splitlines(keepends=True))


def test_raw_config_to_json_shape() -> None:
    config = parse_mig_config(RAW)
    data = config.to_json()
    assert list(data) == ["configs"]
    assert list(data["configs"]) == ["all-disabled", "all-enabled", "all-balanced", "custom"]
    assert data["configs"]["all-disabled"] == [
        {"devices": "all", "device_filter": None, "mig_enabled": False, "mig_devices": {}}
    ]
    balanced = data["configs"]["all-balanced"]
    assert balanced[0]["device_filter"] == ["0x20B010DE", "0x20B110DE"]  # normalised
    assert balanced[1]["device_filter"] == ["0x233010DE"]  # a single string becomes a list
    assert balanced[0]["mig_devices"] == {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
    assert data["configs"]["custom"][0]["devices"] == [0, 1]
    assert data["configs"]["custom"][1]["mig_devices"] == {"1g.5gb+me": 1, "1g.5gb": 6}


def test_load_from_path_and_text_agree(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAW)
    assert load_mig_config(path).to_json() == load_mig_config(RAW).to_json()
    assert load_mig_config(str(path)).source == str(path)


def test_configmap_wrapped_under_any_data_key() -> None:
    for key in ("config.yaml", "mig-parted.yaml"):
        cm = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: custom-mig-parted-config\n"
            f"data:\n  {key}: |\n{_indent(RAW, 4)}"
        )
        assert parse_mig_config(cm).to_json() == parse_mig_config(RAW).to_json()


def test_configmap_with_unrelated_keys_and_other_objects_in_a_multidoc_manifest() -> None:
    text = (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: gpu-operator}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n"
        "  README: just text\n"
        f"  config.yaml: |\n{_indent(RAW, 4)}"
    )
    assert set(parse_mig_config(text).configs) == {"all-disabled", "all-enabled", "all-balanced", "custom"}


def test_multi_document_merges_configs() -> None:
    second = "version: v1\nmig-configs:\n  only-here:\n    - devices: [3]\n      mig-enabled: true\n      mig-devices: {7g.40gb: 1}\n"
    config = parse_mig_config(RAW + "---\n" + second + "---\n")
    assert "only-here" in config.configs and "custom" in config.configs


def test_duplicate_config_across_documents_is_refused() -> None:
    with pytest.raises(
        MigConfigError, match="document 2: config 'all-disabled' is already defined in <text> document 1"
    ):
        parse_mig_config(RAW + "---\n" + RAW)


def test_unquoted_hex_device_filter_is_read_as_the_pci_id() -> None:
    text = "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: 0x20B010DE\n      mig-enabled: false\n"
    assert parse_mig_config(text).configs["a"][0].device_filter == ["0x20B010DE"]


def test_null_mig_devices_is_empty() -> None:
    text = "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n"
    assert parse_mig_config(text).configs["a"][0].mig_devices == {}


def _entry(body: str) -> str:
    return "version: v1\nmig-configs:\n  my-config:\n    - devices: all\n      mig-enabled: true\n  broken:\n" + body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    - devices: all\n      mig-enabled: true\n      mig-device: {1g.5gb: 1}\n", "unknown key 'mig-device'"),
        ("    - devices: all\n", "field 'mig-enabled' is required"),
        ("    - mig-enabled: false\n", "field 'devices' is required"),
        ("    - devices: some\n      mig-enabled: true\n", "field 'devices' must be 'all'"),
        ("    - devices: [0, 0]\n      mig-enabled: true\n", "listed twice"),
        ("    - devices: [-1]\n      mig-enabled: true\n", ">= 0"),
        ("    - devices: []\n      mig-enabled: true\n", "non-empty list"),
        ('    - devices: all\n      mig-enabled: "true"\n', "field 'mig-enabled'"),
        ("    - devices: all\n      mig-enabled: true\n      mig-devices: {1g.5gb: many}\n", "profile '1g.5gb'"),
        ("    - devices: all\n      mig-enabled: true\n      mig-devices: {1g.5gb: -1}\n", "must be >= 0"),
        ("    - devices: all\n      mig-enabled: true\n      mig-devices: {big: 1}\n", "'big' is not a MIG profile"),
        ("    - devices: all\n      mig-enabled: true\n      mig-devices: {1g.5gb+xx: 1}\n", "unknown attribute"),
        ("    - devices: all\n      mig-enabled: false\n      mig-devices: {1g.5gb: 7}\n", "mig-enabled is false"),
        ("    - devices: all\n      device-filter: 20B010DE\n      mig-enabled: false\n", "PCI device id"),
        ("    - just-a-string\n", "must be a mapping"),
        ("    []\n", "non-empty list of entries"),
    ],
)
def test_bad_entries_name_config_entry_and_field(body: str, expected: str) -> None:
    with pytest.raises(MigConfigError) as info:
        parse_mig_config(_entry(body), "site.yaml")
    message = str(info.value)
    assert message.startswith("site.yaml")
    assert expected in message
    if "entries" not in expected:
        assert "config 'broken' entry 1" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: v2\nmig-configs: {a: [{devices: all, mig-enabled: false}]}\n", "version must be 'v1'"),
        ("mig-configs: {a: [{devices: all, mig-enabled: false}]}\n", "version must be 'v1'"),
        ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false}]}\nextra: 1\n", "unknown top-level key"),
        ("version: v1\nmig-configs: {}\n", "non-empty mapping"),
        ("version: v1\nmig-configs: [a]\n", "non-empty mapping"),
        ("- a\n- b\n", "expected a mapping"),
        ("version: v1\nmig-configs: {a: [}\n", "not valid YAML"),
        ("", "no mig-parted config found"),
        ("apiVersion: v1\nkind: ConfigMap\ndata: {other: 'x: 1'}\n", "no mig-parted config found"),
    ],
)
def test_bad_documents(text: str, expected: str) -> None:
    with pytest.raises(MigConfigError, match=expected):
        parse_mig_config(text)


def test_select_unknown_name_lists_known() -> None:
    with pytest.raises(MigConfigError, match=r"no config named 'nope' \(known: all-balanced, all-disabled"):
        parse_mig_config(RAW).select("nope")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(MigConfigError, match="cannot read"):
        load_mig_config(tmp_path / "missing.yaml")


# --- real third-party files (optional; never copied into the repository) -------------------

needs_samples = pytest.mark.skipif(not MIG_PARTED_SAMPLES.is_dir(), reason="../shared/testdata/mig-parted absent")


@needs_samples
def test_mig_parted_examples_file() -> None:
    config = load_mig_config(MIG_PARTED_SAMPLES / "migparted-examples-config.yaml")
    data = config.to_json()["configs"]
    assert len(data) == 9
    assert data["all-disabled"] == [{"devices": "all", "device_filter": None, "mig_enabled": False, "mig_devices": {}}]
    assert data["all-enabled"][0]["mig_devices"] == {}
    assert data["all-1g.5gb.me"][0]["mig_devices"] == {"1g.5gb+me": 1}
    assert data["all-balanced"][0]["mig_devices"] == {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
    custom = data["custom-config"]
    assert [e["devices"] for e in custom] == [[0, 1, 2, 3], [4], [5], [6], [7]]
    assert [e["mig_enabled"] for e in custom] == [False, True, True, True, True]
    assert custom[2]["mig_devices"] == {"2g.10gb": 3}


@needs_samples
def test_gpu_operator_configmap() -> None:
    config = load_mig_config(MIG_PARTED_SAMPLES / "gpu-operator-default-mig-parted-configmap.yaml")
    assert len(config.configs) == 81
    assert config.configs["all-disabled"][0].mig_enabled is False
    filters = {f for entries in config.configs.values() for e in entries for f in e.device_filter or []}
    assert "0x20B010DE" in filters
    # The same content as mig-parted's own file, compared as a set (the order differs).
    others = [p for p in MIG_PARTED_SAMPLES.glob("*.yaml") if "configmap" not in p.name and "examples" not in p.name]
    for other in others:
        assert load_mig_config(other).to_json() == config.to_json()  # dict equality ignores order
