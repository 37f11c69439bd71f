"""Discovery through the real pynvml API against the simulator at the library boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.discovery import collect_inventory
from drivers.nvml.session import open_nvml


def inventory_of(spec: str | Path):
    with open_nvml(spec) as host:
        return collect_inventory(hostname=host.hostname, simulated=True)


def test_h100_8x_with_nvlink() -> None:
    inv = inventory_of("h100-8x")
    assert len(inv.gpus) == 8
    assert inv.host.simulated
    uuids = {g.uuid for g in inv.gpus}
    assert len(uuids) == 8 and all(u.startswith("GPU-") for u in uuids)
    assert len({g.pci.bus_id for g in inv.gpus}) == 8
    for g in inv.gpus:
        assert g.name == "NVIDIA H100 80GB HBM3"
        assert g.memory_total_mib == 81559
        assert g.compute_capability == "9.0"
        assert g.architecture == "hopper"
        assert g.pci.device_id == "0x233010DE"
        assert g.mig.capable and g.mig.state == "disabled"
        assert g.nvlink.links_active == 18 and g.nvlink.version == "4.0"
        assert len(g.nvlink.peers) == 7
    matrix = inv.topology.matrix
    assert [matrix[i][i] for i in range(8)] == ["X"] * 8
    assert all(matrix[i][j] == "NV18" for i in range(8) for j in range(8) if i != j)


def test_l4_4x_no_mig_no_nvlink_pcie_topology() -> None:
    inv = inventory_of("l4-4x")
    assert [g.name for g in inv.gpus] == ["NVIDIA L4"] * 4
    for g in inv.gpus:
        assert g.mig.capable is False and g.mig.state == "unsupported"
        assert g.mig_instances == []
        assert g.nvlink.links_active == 0
        assert g.memory_total_mib == 23034
        assert g.compute_capability == "8.9"
    off_diagonal = {inv.topology.matrix[i][j] for i in range(4) for j in range(4) if i != j}
    assert off_diagonal <= {"PIX", "PXB", "PHB", "NODE", "SYS"}


def test_a100_mixed_mig_layout_and_processes() -> None:
    inv = inventory_of("a100-40gb-2x-mig")
    gpu0, gpu1 = inv.gpus
    assert gpu0.mig.state == "enabled"
    assert sorted(m.profile for m in gpu0.mig_instances) == ["1g.5gb", "2g.10gb", "3g.20gb"]
    for m in gpu0.mig_instances + gpu1.mig_instances:
        assert m.uuid is not None and m.uuid.startswith("MIG-")
        assert m.compute_instances, "every GI in the spec gets its default compute instance"
    # Placements never overlap on one GPU.
    taken: set[int] = set()
    for m in gpu0.mig_instances:
        span = set(range(m.placement.start, m.placement.start + m.placement.size))
        assert not span & taken
        taken |= span
    by_profile = {m.profile: m for m in gpu0.mig_instances}
    assert by_profile["3g.20gb"].memory_mib == 19968 and by_profile["3g.20gb"].sm_count == 42
    assert [m.profile for m in gpu1.mig_instances] == ["1g.5gb"] * 3
    assert sum(len(m.processes) for m in gpu1.mig_instances) == 1
    assert gpu1.processes and gpu1.processes[0].gpu_instance_id is not None
    # NVML does not report utilisation with MIG enabled.
    assert gpu0.utilization_gpu_pct is None


def test_vgpu_host_lists_types() -> None:
    inv = inventory_of("a16-vgpu")
    assert len(inv.gpus) == 4
    vgpu = inv.gpus[0].vgpu
    assert vgpu is not None
    names = {t.name.removeprefix("NVIDIA "): t for t in vgpu.supported}
    assert {"A16-16C", "A16-8C", "A16-4C"} <= set(names)
    assert names["A16-4C"].framebuffer_mib == 4096 and names["A16-4C"].max_instances == 4
    assert names["A16-16C"].type_class


def test_ecc_faults_are_reported() -> None:
    inv = inventory_of("ecc-faulty")
    faulty = [g for g in inv.gpus if (g.health.ecc.volatile_uncorrected or 0) > 0]
    assert faulty, "the ecc-faulty spec has a GPU with uncorrected ECC errors"
    # Ampere and newer remap rows instead of retiring pages.
    assert any(g.health.remapped_rows and g.health.remapped_rows.pending for g in faulty)
    assert all(g.health.retired_pages is None for g in inv.gpus)


def test_retired_pages_on_pre_ampere() -> None:
    inv = inventory_of("t4-retired-pages")
    assert any((g.health.retired_pages or 0) > 0 and g.health.retired_pages_pending for g in inv.gpus)
    assert all(g.health.remapped_rows is None for g in inv.gpus)


def test_same_uuids_after_restart(tmp_path: Path) -> None:
    spec = tmp_path / "host.yaml"
    spec.write_text(yaml.safe_dump({"hostname": "node-a", "gpus": [{"product": "NVIDIA A100-SXM4-80GB", "count": 2}]}))
    first = inventory_of(spec)
    second = inventory_of(spec)
    assert [g.uuid for g in first.gpus] == [g.uuid for g in second.gpus]
    assert first.host.hostname == "node-a"


def test_inventory_json_round_trips() -> None:
    from drivers.contract.inventory import Inventory

    inv = inventory_of("a100-40gb-2x-mig")
    again = Inventory.model_validate_json(inv.model_dump_json())
    assert again == inv


@pytest.mark.parametrize("spec", ["h100-8x", "l4-4x", "a100-40gb-2x-mig", "a16-vgpu", "ecc-faulty"])
def test_bundled_specs_discover(spec: str) -> None:
    inv = inventory_of(spec)
    assert inv.gpus and inv.driver_version and inv.cuda_driver_version.count(".") == 1
    assert [g.index for g in inv.gpus] == list(range(len(inv.gpus)))
