"""The test suite's one conftest: it loads the shared fixtures from ``tests/support`` as plugins.

``tests/`` mirrors the product's packages (``tests/agent``, ``tests/controller``, ``tests/drivers``, ``tests/bench``,
``tests/deploy``, ``tests/docs``, ``tests/devservices``); every fixture and helper shared between test modules lives
in ``tests/support``. The real outside services those fixtures start are run by the ``devservices`` package.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.support.controller",
    "tests.support.openstack_services",
    "tests.support.openstack_cloud",
    "tests.support.eks",
    "tests.support.nvml",
]


@pytest.fixture(autouse=True)
def _isolated_sim_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundled simulator specs keep their state under GPUFABRIC_SIM_STATE_DIR: never share it between tests."""
    monkeypatch.setenv("GPUFABRIC_SIM_STATE_DIR", str(tmp_path_factory.mktemp("sim-state")))
