"""Every bundled simulator host spec starts healthy, except the faults it declares on purpose.

The demo fleet and admins' dry runs use these specs; a GPU that is degraded from the start (e.g. a power
limit below the simulated draw) takes no lease and looks like a gpufabric bug.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.health import HealthMonitor
from drivers.nvml.session import open_nvml
from drivers.nvml.sim.hostspec import GpuGroupSpec, load_host_spec
from drivers.nvml.sim.install import bundled_specs


def declares_a_fault(group: GpuGroupSpec) -> bool:
    """The spec injects a fault into this GPU group (ECC errors, retired pages, remapped rows, XIDs, a lost GPU)."""
    return bool(
        group.ecc.volatile_uncorrected
        or group.ecc.aggregate_uncorrected
        or group.retired_pages is not None
        or group.remapped_rows is not None
        or group.xid_events
        or group.lost
    )


@pytest.mark.parametrize("name", sorted(bundled_specs()))
def test_bundled_spec_gpus_start_healthy_unless_they_declare_a_fault(name: str, tmp_path: Path) -> None:
    gpus = load_host_spec(bundled_specs()[name]).expand()
    with open_nvml(name, tmp_path / "sim.state.json"):
        health = HealthMonitor().observe()
    assert len(health) == len(gpus)
    for gpu, observed in zip(gpus, health.values(), strict=True):
        if declares_a_fault(gpu.group):
            assert observed.state != "healthy", f"{name} GPU {gpu.index} declares a fault but is healthy"
            assert "power" not in {r.code for r in observed.reasons}
            continue
        reasons = {r.code: r.message for r in observed.reasons}
        assert (observed.state, reasons) == ("healthy", {}), f"{name} GPU {gpu.index} ({gpu.product.model})"
