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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``xdist_group`` groups on one worker under pytest 9.

    pytest-xdist's ``--dist loadgroup`` (pyproject addopts) schedules a test by a ``@<group>`` suffix of its node id,
    which it writes to ``item._nodeid`` on each worker. pytest 9 keeps node ids in ``item._id``, so the suffix is
    lost and a group's tests are scattered over the workers: two Nova deployments then queue on one machine-wide
    lock (``devservices.openstack.NOVA_LOCK``) and the second fails after the first worker's whole session. The
    suffix is put where pytest 9 reads it (``tests/test_xdist_groups.py`` checks the placement)."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]
