"""The agent CLI through its real console-script entry point."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drivers.contract.inventory import Inventory
from drivers.gpus.catalog import load_catalog
from tests.support.paths import SHARED

AGENT = str(Path(sys.executable).parent / "gpufabric-agent")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=120, env=env)


def test_inventory_json_for_bundled_spec() -> None:
    proc = run("inventory", "--sim", "h100-8x", "--json")
    assert proc.returncode == 0, proc.stderr
    inv = Inventory.model_validate_json(proc.stdout)
    assert len(inv.gpus) == 8


def test_inventory_table_is_readable() -> None:
    proc = run("inventory", "--sim", "a100-40gb-2x-mig")
    assert proc.returncode == 0, proc.stderr
    assert "A100-SXM4-40GB" in proc.stdout and "3g.20gb" in proc.stdout


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has an NVIDIA driver")
def test_without_driver_one_clear_line_exit_2() -> None:
    proc = run("inventory")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "NVML could not be loaded" in proc.stderr and "--sim" in proc.stderr
    assert proc.stdout == ""


def test_unknown_spec_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("inventory", "--sim", "no-such-host")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no-such-host" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"gpus": [{"product": "NVIDIA Imaginary 1", "count": 1}]}))
    proc = run("inventory", "--sim", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Imaginary" in proc.stderr


MIG_PRODUCTS = [p.name for p in load_catalog().products.values() if p.mig_capable and p.mig_profiles]


@pytest.mark.parametrize("product", MIG_PRODUCTS)
def test_mig_profiles_match_the_catalog(product: str, tmp_path: Path) -> None:
    spec = tmp_path / "host.yaml"
    spec.write_text(yaml.safe_dump({"gpus": [{"product": product, "count": 1, "mig": "enabled"}]}))
    proc = run("mig", "profiles", "--sim", str(spec), "--json")
    assert proc.returncode == 0, proc.stderr
    [gpu] = json.loads(proc.stdout)
    assert gpu["index"] == 0 and gpu["product"] == product
    listed = {p["name"]: p for p in gpu["profiles"]}
    expected = load_catalog().product(product).mig_profiles
    assert set(listed) == {p.name for p in expected}
    for p in expected:
        got = listed[p.name]
        assert got["id"] == p.profile_id
        assert got["slices"] == p.slices
        assert got["memory_mib"] == p.memory_mib
        assert got["max_instances"] == p.max_instances
        assert [(pl["start"], pl["size"]) for pl in got["placements"]] == [tuple(x) for x in p.placements]


SHARED_CATALOG = SHARED / "data" / "gpu-catalog.yaml"


@pytest.mark.skipif(not SHARED_CATALOG.exists(), reason="../shared/data/gpu-catalog.yaml not present")
@pytest.mark.parametrize("product", MIG_PRODUCTS)
def test_mig_profiles_match_the_shared_catalog(product: str, tmp_path: Path) -> None:
    """Cross-check the packaged facts against the source catalog wherever it gives complete rows."""
    source = yaml.safe_load(SHARED_CATALOG.read_text())["gpus"].get(product)
    if source is None or "mig_profiles" not in source:
        pytest.skip(f"{product}: no explicit profile table in the shared catalog")
    spec = tmp_path / "host.yaml"
    spec.write_text(yaml.safe_dump({"gpus": [{"product": product, "count": 1, "mig": "enabled"}]}))
    proc = run("mig", "profiles", "--sim", str(spec), "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p for p in json.loads(proc.stdout)[0]["profiles"]}
    for row in source["mig_profiles"]:
        if row.get("memory_mib") is None or "profile_id" not in row or "placements" not in row:
            continue
        got = listed[row["name"]]
        assert got["id"] == row["profile_id"], row["name"]
        assert got["memory_mib"] == row["memory_mib"], row["name"]
        assert got["max_instances"] == row["max_instances"], row["name"]
        assert got["placements"] == row["placements"], row["name"]


def test_mig_profiles_explains_disabled_mig() -> None:
    proc = run("mig", "profiles", "--sim", "h100-8x", "--json")
    assert proc.returncode == 1
    assert "MIG is disabled" in proc.stderr and "Traceback" not in proc.stderr


def test_mig_profiles_explains_unsupported() -> None:
    proc = run("mig", "profiles", "--sim", "l4-4x")
    assert proc.returncode == 1
    assert "does not support MIG" in proc.stderr


def test_sim_commands_change_what_nvml_reports(tmp_path: Path) -> None:
    state = str(tmp_path / "state.json")
    listed = run("sim", "list", "--json")
    assert listed.returncode == 0 and "h100-8x" in json.loads(listed.stdout)
    added = run("sim", "add-process", "--sim", "h100-8x", "--gpu", "1", "--pid", "4242", "--sim-state", state)
    assert added.returncode == 0, added.stderr
    inv = Inventory.model_validate_json(run("inventory", "--sim", "h100-8x", "--sim-state", state, "--json").stdout)
    assert [p.pid for p in inv.gpus[1].processes] == [4242]
    assert inv.gpus[0].processes == []
    bad = run("sim", "reset-gpu", "--sim", "h100-8x", "--gpu", "9", "--sim-state", state)
    assert bad.returncode == 1 and "no GPU 9" in bad.stderr and "Traceback" not in bad.stderr


def test_inventory_carries_health_states() -> None:
    proc = run("inventory", "--sim", "ecc-faulty", "--json")
    assert proc.returncode == 0, proc.stderr
    inv = Inventory.model_validate_json(proc.stdout)
    healthy, faulty = inv.gpus
    assert healthy.health.state == "healthy"
    assert faulty.health.state in ("unhealthy", "quarantined")
    assert faulty.health.reasons and all(r.code for r in faulty.health.reasons)
    assert inv.health.healthy == 1 and inv.health.healthy + inv.health.unhealthy + inv.health.quarantined == 2


def test_inventory_slice_offers_follow_the_sharing_config(tmp_path: Path) -> None:
    plain = Inventory.model_validate_json(run("inventory", "--sim", "l4-4x", "--json").stdout)
    assert [(s.kind, s.count) for s in plain.gpus[0].slices] == [("gpu", 1)]
    config = tmp_path / "ts.yaml"
    config.write_text(
        yaml.safe_dump(
            {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
        )
    )
    proc = run("inventory", "--sim", "l4-4x", "--json", "--sharing-config", str(config))
    assert proc.returncode == 0, proc.stderr
    shared = Inventory.model_validate_json(proc.stdout)
    assert all([(s.kind, s.count) for s in g.slices] == [("timeslice", 4)] for g in shared.gpus)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 1}]}}}
        )
    )
    proc = run("inventory", "--sim", "l4-4x", "--sharing-config", str(bad))
    assert proc.returncode == 2 and "replicas" in proc.stderr and "Traceback" not in proc.stderr


def test_bus_ids_print_as_they_are_and_piped_output_does_not_wrap() -> None:
    """rich turned ``00000000:AB:00.0`` into an emoji (``:ab:``) and wrapped piped output at 80 columns,
    splitting UUIDs; the table is data: printed literally, one row per GPU line."""
    from typer.testing import CliRunner

    from agent.cli import app as agent_app

    result = CliRunner().invoke(agent_app, ["inventory", "--sim", "h100-8x"], env={"COLUMNS": ""})
    assert result.exit_code == 0, result.output
    assert "00000000:AB:00.0" in result.output and "\U0001f18e" not in result.output
    uuid_lines = [line for line in result.output.splitlines() if "GPU-" in line]
    assert len(uuid_lines) == 8, result.output  # each UUID whole on its GPU's one line


def test_an_error_message_with_brackets_is_printed_as_it_is() -> None:
    from typer.testing import CliRunner

    from agent.cli import app as agent_app

    result = CliRunner().invoke(agent_app, ["inventory", "--sim", "/nonexistent[bold]x"])
    assert result.exit_code != 0 and "/nonexistent[bold]x" in result.output
