"""`gpufabric nccl parse` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app
from drivers.nccl.models import ISSUE_RESULT_KEYS

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_table_view_ok_exits_0() -> None:
    result = runner.invoke(app, ["nccl", "parse", str(FIXTURES / "mpirun_tag_output_all_reduce.log")])
    assert result.exit_code == 0, result.output
    assert "all_reduce_perf" in result.output
    assert "101.472" in result.output
    assert "OK" in result.output


def test_table_view_exits_1_when_not_ok() -> None:
    result = runner.invoke(app, ["nccl", "parse", str(FIXTURES / "wrong_elements_all_reduce.log")])
    assert result.exit_code == 1
    assert "1024 wrong elements" in result.output
    assert "FAILED" in result.output


def test_json_is_the_issue_shape_and_exits_0_even_when_not_ok() -> None:
    result = runner.invoke(app, ["nccl", "parse", "--json", str(FIXTURES / "cuda_failure_mid_table.log")])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert set(data) == ISSUE_RESULT_KEYS | {"details"}
    assert data["ok"] is False and data["avg_busbw_gbps"] is None
    assert len(data["rows"]) == 4


def test_unparseable_text_json_says_no_table() -> None:
    result = runner.invoke(app, ["nccl", "parse", "--json", str(FIXTURES / "not_nccl.log")])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["rows"] == []
    assert "no nccl-tests result table" in data["errors"][0]


def test_unparseable_text_table_view_exits_1() -> None:
    result = runner.invoke(app, ["nccl", "parse", str(FIXTURES / "not_nccl.log")])
    assert result.exit_code == 1
    assert "no nccl-tests result table" in result.output


@pytest.mark.parametrize("make_path", ["missing", "directory", "binary"])
def test_bad_file_exits_2_with_one_line(tmp_path: Path, make_path: str) -> None:
    path = tmp_path / "x.log"
    if make_path == "directory":
        path.mkdir()
    elif make_path == "binary":
        path.write_bytes(b"\x7fELF\x00\x00\x01")
    result = runner.invoke(app, ["nccl", "parse", "--json", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr


def test_stdin_dash() -> None:
    text = (FIXTURES / "srun_label_all_gather.log").read_text()
    result = runner.invoke(app, ["nccl", "parse", "--json", "-"], input=text)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ranks"] == 8


def test_installed_entry_point() -> None:
    exe = Path(sys.executable).parent / "gpufabric"
    if not exe.exists():
        pytest.skip("gpufabric entry point not installed in this environment")
    proc = subprocess.run(
        [str(exe), "nccl", "parse", "--json", str(FIXTURES / "no_hash_alltoall.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True and len(data["rows"]) == 11 and data["ranks"] == 16
