"""Slice offers under a sharing config, on inventories the simulator produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.discovery import collect_inventory
from agent.sharing import annotate_offers, load_configs, slice_offers
from drivers.contract.inventory import Inventory
from drivers.nvml.session import open_nvml
from tests.support.sharing_builders import a100, inventory


def _inventory(spec: str, tmp_path: Path) -> Inventory:
    with open_nvml(spec, tmp_path / f"{spec}.state.json"):
        return collect_inventory(hostname="test", simulated=True)


def _cfg(text: str):  # type: ignore[no-untyped-def]
    return load_configs(text)["default"]


@pytest.fixture
def l4(tmp_path: Path) -> Inventory:
    return _inventory("l4-4x", tmp_path)


@pytest.fixture
def a100_mig() -> Inventory:
    # the layout of the bundled a100-40gb-2x-mig spec
    return inventory([a100(0, ["3g.20gb", "2g.10gb", "1g.5gb"]), a100(1, ["1g.5gb", "1g.5gb", "1g.5gb"])])


def test_unshared_whole_gpu(l4: Inventory) -> None:
    gpu = l4.gpus[0]
    offers = slice_offers(gpu, None)
    assert [(o.kind, o.count, o.memory_mib, o.parent_uuid) for o in offers] == [
        ("gpu", 1, gpu.memory_total_mib, gpu.uuid)
    ]


def test_time_slicing_replicas_on_whole_gpus(l4: Inventory) -> None:
    cfg = _cfg("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}")
    annotated = annotate_offers(l4, cfg)
    for gpu in annotated.gpus:
        assert [(o.kind, o.count, o.memory_mib) for o in gpu.slices] == [("timeslice", 4, gpu.memory_total_mib)]
    assert all(not g.slices for g in l4.gpus) or l4.gpus[0].slices != annotated.gpus[0].slices


def test_mps_memory_limit_is_an_equal_share_unless_set(l4: Inventory) -> None:
    cfg = _cfg("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}")
    gpu = l4.gpus[0]
    assert [(o.kind, o.count, o.memory_mib) for o in slice_offers(gpu, cfg)] == [("mps", 4, gpu.memory_total_mib // 4)]
    assert slice_offers(gpu, cfg, mps_memory_limit_mib=2048)[0].memory_mib == 2048


def test_devices_select_which_gpus_are_shared(l4: Inventory) -> None:
    cfg = _cfg(
        "version: v1\nsharing: {timeSlicing: {resources: "
        f"[{{name: nvidia.com/gpu, replicas: 3, devices: [1, {l4.gpus[3].uuid}]}}]}}}}"
    )
    kinds = [slice_offers(g, cfg)[0].kind for g in l4.gpus]
    assert kinds == ["gpu", "timeslice", "gpu", "timeslice"]
    count_cfg = _cfg(
        "version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2, devices: 2}]}}"
    )
    assert [slice_offers(g, count_cfg)[0].kind for g in l4.gpus] == ["timeslice", "timeslice", "gpu", "gpu"]


def test_mig_instances_unshared_and_time_sliced(a100_mig: Inventory) -> None:
    gpu = a100_mig.gpus[0]
    plain = slice_offers(gpu, None)
    assert sorted((o.kind, o.profile, o.count) for o in plain) == [
        ("mig", "1g.5gb", 1),
        ("mig", "2g.10gb", 1),
        ("mig", "3g.20gb", 1),
    ]
    assert all(o.parent_uuid.startswith("MIG-") for o in plain)
    cfg = _cfg(
        "version: v1\nflags: {migStrategy: mixed}\nsharing: {timeSlicing: {resources: "
        "[{name: nvidia.com/mig-1g.5gb, replicas: 2}, {name: nvidia.com/mig-3g.20gb, replicas: 3}]}}"
    )
    shared = {o.profile: (o.kind, o.count, o.memory_mib) for o in slice_offers(gpu, cfg)}
    by_profile = {m.profile: m.memory_mib for m in gpu.mig_instances}
    assert shared == {
        "1g.5gb": ("timeslice", 2, by_profile["1g.5gb"]),
        "2g.10gb": ("mig", 1, by_profile["2g.10gb"]),
        "3g.20gb": ("timeslice", 3, by_profile["3g.20gb"]),
    }


def test_mig_single_strategy_shares_through_nvidia_gpu(a100_mig: Inventory) -> None:
    cfg = _cfg("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}")
    offers = slice_offers(a100_mig.gpus[1], cfg, mig_strategy="single")
    assert {(o.kind, o.count, o.profile) for o in offers} == {("timeslice", 2, "1g.5gb")}
    # under mixed, nvidia.com/gpu does not cover MIG devices
    assert {o.kind for o in slice_offers(a100_mig.gpus[1], cfg, mig_strategy="mixed")} == {"mig"}


def test_mps_on_mig_instances_divides_instance_memory(a100_mig: Inventory) -> None:
    cfg = _cfg("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}")
    offers = slice_offers(a100_mig.gpus[0], cfg, mig_strategy="single")
    memory = {m.profile: m.memory_mib for m in a100_mig.gpus[0].mig_instances}
    assert {(o.kind, o.profile, o.memory_mib) for o in offers} == {("mps", p, m // 2) for p, m in memory.items()}
