"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_sim_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundled simulator specs keep their state under GPUFABRIC_SIM_STATE_DIR: never share it between tests."""
    monkeypatch.setenv("GPUFABRIC_SIM_STATE_DIR", str(tmp_path_factory.mktemp("sim-state")))
