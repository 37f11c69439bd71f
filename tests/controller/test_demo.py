"""`gpufabric demo --exit-after-ready`: the bundled fleet registers, reports and converges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_exit_after_ready(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-c", "from controller.cli import main; main()",
        "demo", "--port", "0", "--data-dir", str(tmp_path), "--exit-after-ready", "--timeout", "120",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fleet ready" in done.stdout
    assert "admin token: gft_" in done.stdout
    for host in ("demo-h100-1", "demo-a100-80gb-1", "demo-a100-40gb-1", "demo-l4-1", "demo-a16-1"):
        assert host in done.stdout
    assert (tmp_path / "controller.db").exists()
