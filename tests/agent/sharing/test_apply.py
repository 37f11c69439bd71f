"""Applying sharing configs through the simulated NVML, with a fake MPS control command."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from agent.sharing import MpsSettings, SharingApplyError, apply_sharing, load_configs, read_state, sharing_status
from drivers.nvml.session import open_nvml

MPS = "version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}"
TS = "version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}"
NONE = "version: v1\n"


def _cfg(text: str):  # type: ignore[no-untyped-def]
    return load_configs(text)["default"]


@pytest.fixture
def mps(tmp_path: Path) -> MpsSettings:
    """A stand-in for nvidia-cuda-mps-control that appends its arguments, env and stdin to a log."""
    script = tmp_path / "fake-mps-control"
    log = tmp_path / "mps.log"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s|%s|%s|%s|%s|%s\\n" "$*" "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" '
        f'"$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" "$CUDA_VISIBLE_DEVICES" "$(cat)" >> {log}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return MpsSettings(
        start_command=[str(script), "-d"],
        stop_command=[str(script)],
        pipe_directory=tmp_path / "pipe",
        log_directory=tmp_path / "log",
    )


def _log(settings: MpsSettings) -> list[list[str]]:
    log = Path(settings.start_command[0]).parent / "mps.log"
    return [line.split("|") for line in log.read_text().splitlines()] if log.exists() else []


def test_mps_sets_exclusive_process_and_starts_the_daemon(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        report = apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps, config_path=tmp_path / "dp.yaml")
        assert [c.after for c in report.compute_mode_changes] == ["exclusive-process"] * 4
        assert [m.call for m in host.mutation_log] == ["nvmlDeviceSetComputeMode"] * 4
        assert all(set(s.compute_modes.values()) == {"exclusive-process"} for s in sharing_status())
    assert report.mps_daemon == "started"
    (start,) = _log(mps)
    assert start[0] == "-d"
    assert start[1] == str(mps.pipe_directory)
    # 23034 MiB L4 / 4 replicas, ordinals within CUDA_VISIBLE_DEVICES
    assert start[2] == "0=5758M,1=5758M,2=5758M,3=5758M"
    assert start[3] == "25"
    assert start[4].count("GPU-") == 4
    assert mps.pipe_directory.is_dir() and mps.log_directory.is_dir()
    assert yaml.safe_load((tmp_path / "dp.yaml").read_text())["sharing"]["mps"]["resources"][0]["replicas"] == 4


def test_apply_twice_changes_nothing(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps)
        host.mutation_log.clear()
        again = apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps)
        assert host.mutation_log == []
    assert again.compute_mode_changes == [] and again.mps_daemon == "running" and not again.changed
    assert len(_log(mps)) == 1


def test_new_limits_restart_the_daemon_and_leaving_mps_restores_default(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json"):
        apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps)
        mps.active_thread_percentage = 50
        assert apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps).mps_daemon == "restarted"
        back = apply_sharing(_cfg(NONE), state_dir=tmp_path / "state", mps=mps)
        assert [c.after for c in back.compute_mode_changes] == ["default"] * 4
        assert back.mps_daemon == "stopped"
        assert all(set(s.compute_modes.values()) == {"default"} for s in sharing_status())
    calls = _log(mps)
    assert [c[0] for c in calls] == ["-d", "", "-d", ""]
    assert calls[1][5] == "quit" and calls[3][5] == "quit"
    assert calls[2][3] == "50"
    assert read_state(tmp_path / "state")["exclusive_by_agent"] == []


def test_mps_on_a_subset_leaves_other_gpus_alone(tmp_path: Path, mps: MpsSettings) -> None:
    cfg = _cfg("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 2, devices: [1]}]}}")
    with open_nvml("l4-4x", tmp_path / "sim.json"):
        report = apply_sharing(cfg, state_dir=tmp_path / "state", mps=mps)
        modes = [next(iter(s.compute_modes.values())) for s in sharing_status()]
    assert [c.gpu_index for c in report.compute_mode_changes] == [1]
    assert modes == ["default", "exclusive-process", "default", "default"]
    assert _log(mps)[0][2] == f"0={23034 // 2}M"


def test_time_slicing_wants_default_compute_mode(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        report = apply_sharing(_cfg(TS), state_dir=tmp_path / "state", mps=mps)
        assert report.compute_mode_changes == [] and host.mutation_log == []
    assert report.strategy == "time-slicing" and report.mps_daemon == "not-running"
    assert _log(mps) == []


def test_mps_on_mig_sets_each_mig_device(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("a100-40gb-2x-mig", tmp_path / "sim.json") as host:
        report = apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=mps)
        assert {m.detail.get("mode") for m in host.mutation_log} == {3}
        assert all("gi" in m.detail for m in host.mutation_log)
    assert len(report.compute_mode_changes) == 6
    assert all(c.uuid.startswith("MIG-") for c in report.compute_mode_changes)


def test_mps_on_mig_is_refused_in_kubernetes(tmp_path: Path) -> None:
    with open_nvml("a100-40gb-2x-mig", tmp_path / "sim.json") as host:
        with pytest.raises(SharingApplyError, match="MIG enabled: the device plugin does not support MPS with MIG"):
            apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", kubernetes=True)
        assert host.mutation_log == []


def test_kubernetes_mode_skips_daemon_and_config_file(tmp_path: Path, mps: MpsSettings) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json"):
        report = apply_sharing(
            _cfg(MPS), state_dir=tmp_path / "state", kubernetes=True, mps=mps, config_path=tmp_path / "dp.yaml"
        )
    assert report.mps_daemon == "skipped" and len(report.compute_mode_changes) == 4
    assert not (tmp_path / "dp.yaml").exists() and _log(mps) == []


def test_no_permission_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "nonroot.yaml"
    spec.write_text("hostname: sim-nonroot\nroot: false\ngpus:\n  - product: L4\n    count: 2\n")
    with (
        open_nvml(str(spec), tmp_path / "sim.json"),
        pytest.raises(
            SharingApplyError, match=r"GPU 0 \(GPU-.*\): setting compute mode to exclusive-process needs root"
        ),
    ):
        apply_sharing(_cfg(MPS), state_dir=tmp_path / "state")


def test_daemon_failure_is_reported(tmp_path: Path) -> None:
    settings = MpsSettings(
        start_command=["/bin/sh", "-c", "echo 'cannot open pipe' >&2; exit 3"],
        pipe_directory=tmp_path / "p",
        log_directory=tmp_path / "l",
    )
    with (
        open_nvml("l4-4x", tmp_path / "sim.json"),
        pytest.raises(SharingApplyError, match="exited with 3: cannot open pipe"),
    ):
        apply_sharing(_cfg(MPS), state_dir=tmp_path / "state", mps=settings)
    missing = MpsSettings(
        start_command=[str(tmp_path / "nope")], pipe_directory=tmp_path / "p", log_directory=tmp_path / "l"
    )
    with open_nvml("l4-4x", tmp_path / "sim2.json"), pytest.raises(SharingApplyError, match="command not found"):
        apply_sharing(_cfg(MPS), state_dir=tmp_path / "state2", mps=missing)
