"""Tests marked with one ``xdist_group`` run on one pytest-xdist worker (``--dist loadgroup``): the Nova tests rely
on it (one deployment per run, one machine-wide lock). Checked by a real ``pytest -n 2`` run on a probe file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO_ROOT

PROBE = """
import os
from pathlib import Path

import pytest

OUT = Path(__file__).with_name("workers")


def _record(name):
    with OUT.open("a") as f:
        f.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def db(request):
    return request.param


@pytest.mark.xdist_group("nova")
@pytest.mark.parametrize("n", range(3))
def test_grouped(db, n, request):
    _record("grouped")


@pytest.mark.parametrize("n", range(12))
def test_free(n):
    _record("free")
"""


def test_a_group_runs_on_one_worker_even_across_parameters(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-q", "-m", "not nothing", str(tmp_path / "test_probe.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in (tmp_path / "workers").read_text().splitlines()]
    grouped = {worker for name, worker in rows if name == "grouped"}
    assert len([r for r in rows if r[0] == "grouped"]) == 6
    assert len(grouped) == 1, rows
    assert {worker for _, worker in rows} == {"gw0", "gw1"}, "the probe must use both workers to mean anything"
