"""`gpufabric-agent mig ...` through the real typer app and the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from tests.support.mig_builders import MIG_PARTED_SAMPLES

AGENT = str(Path(sys.executable).parent / "gpufabric-agent")
CONFIGS = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-1g.5gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 7}
  all-balanced:
    - device-filter: "0x20B010DE"
      devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
  h100-two-3g:
    - devices: [0, 1]
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
  wrong-profile:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.12gb": 1}
  missing-gpu:
    - devices: [0, 7]
      mig-enabled: false
"""
runner = CliRunner()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mig-config.yaml"
    path.write_text(CONFIGS)
    return path


def mig(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["mig", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_one_clear_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_validate_json(config_file: Path) -> None:
    code, out, _ = mig("validate", "--config", config_file, "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data["configs"]) == [
        "all-disabled",
        "all-1g.5gb",
        "all-balanced",
        "h100-two-3g",
        "wrong-profile",
        "missing-gpu",
    ]
    assert data["configs"]["all-balanced"] == [
        {
            "devices": "all",
            "device_filter": ["0x20B010DE"],
            "mig_enabled": True,
            "mig_devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
        }
    ]


def test_validate_table(config_file: Path) -> None:
    code, out, _ = mig("validate", "--config", config_file)
    assert code == 0
    assert "6 MIG configs" in out and "all-balanced" in out and "0x20B010DE" in out and "7 x 1g.5gb" in out


def test_validate_bad_file_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nmig-configs:\n  mine:\n    - devices: all\n      mig-enabled: true\n      gpus: 2\n")
    code, out, err = mig("validate", "--config", bad)
    assert code == 2 and out == ""
    assert_one_clear_line(err)
    assert str(bad) in err.replace("\n", "") and "config 'mine' entry 1: unknown key 'gpus'" in err
    code, _, err = mig("validate", "--config", tmp_path / "absent.yaml")
    assert code == 2 and "cannot read" in err
    assert_one_clear_line(err)


def test_plan_json_lists_nvml_operations(config_file: Path) -> None:
    code, out, _ = mig("plan", "--config", config_file, "--select", "all-1g.5gb", "--sim", "a100-40gb-2x-mig", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["config"] == "all-1g.5gb"
    gpu0, gpu1 = plan["gpus"]
    assert gpu0["status"] == "change" and gpu1["status"] == "change"
    assert [op["op"] for op in gpu1["operations"]] == ["create-gi", "create-ci"] * 4
    assert gpu1["operations"][0]["nvml"].startswith("nvmlDeviceCreateGpuInstanceWithPlacement(gpu 1, 19, {start: 0")
    assert len(gpu1["layout"]) == 7


def test_plan_changes_nothing(config_file: Path) -> None:
    mig("plan", "--config", config_file, "--select", "all-1g.5gb", "--sim", "a100-40gb-2x-mig")
    code, out, _ = mig("plan", "--config", config_file, "--select", "all-1g.5gb", "--sim", "a100-40gb-2x-mig")
    assert code == 0 and "create-gi" in out  # still planned: the first plan did not apply anything


def test_plan_blocked_exit_1_names_the_instance(config_file: Path) -> None:
    code, out, _ = mig("plan", "--config", config_file, "--select", "all-balanced", "--sim", "a100-40gb-2x-mig")
    assert code == 1
    assert "blocked" in out and "GI 13 (1g.5gb at 6:1)" in out and "pid 4242" in out


@pytest.mark.parametrize(
    ("select", "sim", "expected"),
    [
        ("wrong-profile", "a100-40gb-2x-mig", "config 'wrong-profile' entry 1 (devices all) GPU 0"),
        ("wrong-profile", "a100-40gb-2x-mig", "profile '1g.12gb' does not exist on this GPU"),
        ("missing-gpu", "a100-40gb-2x-mig", "GPU 7 does not exist (this host has GPUs 0-1)"),
        ("all-1g.5gb", "l4-4x", "GPU 0 (NVIDIA L4): GPU is not MIG capable"),
        ("no-such-config", "a100-40gb-2x-mig", "no config named 'no-such-config'"),
    ],
)
def test_invalid_selection_one_line_exit_2(config_file: Path, select: str, sim: str, expected: str) -> None:
    for command in ("plan", "apply"):
        code, out, err = mig(command, "--config", config_file, "--select", select, "--sim", sim)
        assert code == 2 and out == ""
        assert_one_clear_line(err)
        assert expected in err and str(config_file) in err


def test_apply_converges_then_is_idempotent(config_file: Path) -> None:
    args = ("apply", "--config", config_file, "--select", "all-1g.5gb", "--sim", "a100-40gb-2x-mig", "--json")
    code, out, _ = mig(*args)
    assert code == 0
    report = json.loads(out)
    assert [g["status"] for g in report["gpus"]] == ["changed", "changed"]
    assert all(op["result"] == "ok" for g in report["gpus"] for op in g["operations"])
    code, out, _ = mig(*args)
    assert code == 0
    again = json.loads(out)
    assert [g["status"] for g in again["gpus"]] == ["untouched", "untouched"]
    assert [g["layout"] for g in again["gpus"]] == [g["layout"] for g in report["gpus"]]


def test_apply_blocked_exit_1(config_file: Path) -> None:
    code, out, _ = mig("apply", "--config", config_file, "--select", "all-balanced", "--sim", "a100-40gb-2x-mig")
    assert code == 1
    assert "GPU 0" in out and "changed" in out and "blocked" in out and "GI 13" in out


def test_apply_pending_reset_exit_3(config_file: Path) -> None:
    code, out, _ = mig("apply", "--config", config_file, "--select", "h100-two-3g", "--sim", "h100-8x", "--json")
    assert code == 3
    report = json.loads(out)
    assert [g["status"] for g in report["gpus"][:3]] == ["pending-reset", "pending-reset", "untouched"]
    assert report["gpus"][0]["mig_state"] == "pending-enable"


def test_console_script_apply_human_output(config_file: Path) -> None:
    proc = subprocess.run(
        [AGENT, "mig", "apply", "--config", str(config_file), "--select", "all-1g.5gb", "--sim", "a100-40gb-2x-mig"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "GPU 1 NVIDIA A100-SXM4-40GB [MIG enabled]: changed" in proc.stdout
    assert "nvmlDeviceCreateGpuInstanceWithPlacement(gpu 1, 19, {start: 0, size: 1})" in proc.stdout
    assert "1g.5gb@6:1 (GI 13, busy)" in proc.stdout


def test_console_script_bad_input_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: false\n      mig-devices: {1g.5gb: 1}\n"
    )
    proc = subprocess.run([AGENT, "mig", "validate", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "config 'x' entry 1: field 'mig-devices' lists 1g.5gb but mig-enabled is false" in proc.stderr


@pytest.mark.skipif(not MIG_PARTED_SAMPLES.is_dir(), reason="../shared/testdata/mig-parted absent")
def test_validate_gpu_operator_configmap_and_plan_it() -> None:
    configmap = MIG_PARTED_SAMPLES / "gpu-operator-default-mig-parted-configmap.yaml"
    code, out, _ = mig("validate", "--config", configmap, "--json")
    assert code == 0 and len(json.loads(out)["configs"]) == 81
    # The operator's all-balanced selects per device id; on an A100-40GB it means 2x1g + 2g + 3g.
    code, out, _ = mig("plan", "--config", configmap, "--select", "all-balanced", "--sim", "a100-40gb-2x-mig", "--json")
    assert code == 1  # GPU 1's busy 1g.5gb at 6:1 blocks that layout
    plan = json.loads(out)
    assert plan["gpus"][0]["status"] == "change" and plan["gpus"][1]["status"] == "blocked"
