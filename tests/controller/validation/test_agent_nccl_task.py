"""The agent's nccl-test task: command lines (single node, mpirun + hostfile) and running a stand-in binary."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.runner import TASK_HANDLERS
from agent.tasks.nccl import NcclTaskError, build_command, run_nccl_test
from drivers.contract.protocol import Task
from tests.support.nccl_standin import install_standins


def _task(**params: object) -> Task:
    return Task(id="t1", kind="nccl-test", params=params, created_at=datetime.now(UTC))


def test_registered_as_a_task_handler() -> None:
    assert TASK_HANDLERS["nccl-test"] is run_nccl_test


def test_single_node_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", "/opt/nccl")
    argv = build_command({"test": "all_gather_perf", "max_bytes": "8G", "iters": 50, "gpus_per_node": 8}, tmp_path)
    assert argv == ["/opt/nccl/all_gather_perf", "-b", "8", "-e", "8G", "-f", "2", "-g", "8", "-n", "50", "-w", "5",
                    "-c", "1"]  # fmt: skip
    assert build_command({"tests_dir": "/x", "gpus_per_node": 1}, tmp_path)[0] == "/x/all_reduce_perf"
    assert build_command({"binary": "/y/custom_perf", "gpus_per_node": 1}, tmp_path)[0] == "/y/custom_perf"


def test_multi_node_command_writes_a_hostfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", "/opt/nccl")
    monkeypatch.delenv("GPUFABRIC_MPIRUN", raising=False)
    params = {"hosts": ["a", "b", "c"], "gpus_per_node": 4, "mpirun": "/opt/amazon/openmpi/bin/mpirun",
              "mpirun_args": "-x FI_PROVIDER=efa"}  # fmt: skip
    argv = build_command(params, tmp_path)
    assert (tmp_path / "hostfile").read_text() == "a slots=4\nb slots=4\nc slots=4\n"
    assert argv == [
        "/opt/amazon/openmpi/bin/mpirun", "--hostfile", str(tmp_path / "hostfile"), "-np", "12", "-N", "4",
        "--tag-output", "--bind-to", "none", "-x", "FI_PROVIDER=efa",
        "/opt/nccl/all_reduce_perf", "-b", "8", "-e", "128M", "-f", "2", "-g", "1", "-n", "20", "-w", "5", "-c", "1",
    ]  # fmt: skip
    assert build_command({"hosts": ["a", "b"], "gpus_per_node": 1}, tmp_path)[0] == "mpirun"


@pytest.mark.parametrize(
    "params",
    [{"test": "../../bin/sh"}, {"max_bytes": "1T"}, {"step_factor": 1}, {"iters": "many"}],
)
def test_bad_params_are_refused(tmp_path: Path, params: dict[str, object]) -> None:
    with pytest.raises(NcclTaskError):
        build_command({**params, "gpus_per_node": 1}, tmp_path)


def test_runs_the_binary_and_uploads_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", str(install_standins(tmp_path / "bin")))
    result = run_nccl_test(_task(gpus_per_node=4, max_bytes="1M"))
    assert result.status == "succeeded"
    assert "# Avg bus bandwidth" in result.output["log"] and result.output["exit_code"] == 0
    monkeypatch.setenv("STANDIN_WRONG", "2")
    failed = run_nccl_test(_task(gpus_per_node=4, max_bytes="1M"))
    assert failed.status == "failed" and failed.output["exit_code"] == 1 and "FAILED" in failed.output["log"]


def test_missing_binary_and_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", str(tmp_path / "nothing"))
    missing = run_nccl_test(_task(gpus_per_node=1))
    assert missing.status == "failed" and "not found" in missing.message
    slow = tmp_path / "slow" / "all_reduce_perf"
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\necho '# nThread 1 nGpus 1'\nsleep 10\n")
    slow.chmod(0o755)
    monkeypatch.setenv("GPUFABRIC_NCCL_TESTS_DIR", str(slow.parent))
    timed_out = run_nccl_test(_task(gpus_per_node=1, timeout_s=0.5))
    assert timed_out.status == "failed" and timed_out.output["timed_out"] is True
