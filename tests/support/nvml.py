"""Fixtures: install the simulated NVML for a test and tear it down again."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

from drivers.nvml.sim.host import SimulatedHost
from drivers.nvml.sim.hostspec import HostSpec
from drivers.nvml.sim.install import install, uninstall

Sim = Callable[..., SimulatedHost]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    """``sim(spec, state_path=None)`` installs a spec (name, path, dict or HostSpec) and inits NVML."""
    inited = 0

    def start(spec: str | Path | dict | HostSpec, state_path: Path | None = None) -> SimulatedHost:
        nonlocal inited
        if isinstance(spec, dict):
            spec = HostSpec.model_validate(spec)
        host = install(spec, state_path=state_path or tmp_path / "sim.state.json")
        pynvml.nvmlInit()
        inited += 1
        return host

    yield start
    for _ in range(inited):
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    uninstall()


def mig_spec(model: str, **group: object) -> dict:
    return {"hostname": "t", "gpus": [{"product": model, "mig": "enabled", **group}]}
