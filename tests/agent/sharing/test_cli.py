"""The sharing, health and labels commands, end to end through the CLI on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner()


def test_sharing_validate_json_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "ts.yaml"
    good.write_text("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}\n")
    result = runner.invoke(app, ["sharing", "validate", "--config", str(good), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["configs"]["default"]["strategy"] == "time-slicing"
    assert data["configs"]["default"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4, "devices": "all", "rename": None}
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 1}]}}\n")
    result = runner.invoke(app, ["sharing", "validate", "--config", str(bad)])
    assert result.exit_code == 1
    assert "replicas" in result.output and "Traceback" not in result.output


def test_sharing_apply_and_show(tmp_path: Path) -> None:
    cfg = tmp_path / "mps.yaml"
    cfg.write_text("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}\n")
    common = ["--sim", "l4-4x", "--sim-state", str(tmp_path / "sim.json"), "--state-dir", str(tmp_path / "state")]
    result = runner.invoke(
        app,
        ["sharing", "apply", "--config", str(cfg), *common, "--json", "--mps-start", "true", "--mps-stop", "true",
         "--mps-pipe-dir", str(tmp_path / "pipe"), "--mps-log-dir", str(tmp_path / "log")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["strategy"] == "mps" and len(report["compute_mode_changes"]) == 4
    assert report["mps_daemon"] == "started"
    shown = runner.invoke(app, ["sharing", "show", *common, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["applied"]["strategy"] == "mps"
    assert {m for d in data["devices"] for m in d["compute_modes"].values()} == {"exclusive-process"}


def test_health_and_labels_commands(tmp_path: Path) -> None:
    sim = ["--sim", "ecc-faulty", "--sim-state", str(tmp_path / "sim.json")]
    result = runner.invoke(app, ["health", *sim, "--state-dir", str(tmp_path / "state"), "--json"])
    assert result.exit_code == 0, result.output
    states = [h["state"] for h in json.loads(result.stdout).values()]
    assert states == ["healthy", "unhealthy"]
    watched = runner.invoke(
        app, ["health", *sim, "--state-dir", str(tmp_path / "state"), "--watch", "0.1", "--iterations", "2"]
    )
    assert watched.exit_code == 0, watched.output
    uuid = next(iter(json.loads(result.stdout)))
    quarantined = runner.invoke(app, ["health", "quarantine", uuid, "--state-dir", str(tmp_path / "state")])
    assert quarantined.exit_code == 0, quarantined.output
    cleared = runner.invoke(app, ["health", "clear", uuid, "--state-dir", str(tmp_path / "state"), "--json"])
    assert json.loads(cleared.stdout)["cleared"] == ["admin-quarantine"]

    cfg = tmp_path / "ts.yaml"
    cfg.write_text("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}\n")
    labels = runner.invoke(
        app, ["labels", "--sim", "l4-4x", "--sim-state", str(tmp_path / "l4.json"), "--sharing-config", str(cfg)]
    )
    assert labels.exit_code == 0, labels.output
    lines = labels.stdout.splitlines()
    assert "nvidia.com/gpu.replicas=4" in lines
    assert "nvidia.com/gpu.sharing-strategy=time-slicing" in lines
    assert "nvidia.com/gpu.product=NVIDIA-L4-SHARED" in lines
    keys = [line.partition("=")[0] for line in lines]
    assert keys == sorted(keys)
