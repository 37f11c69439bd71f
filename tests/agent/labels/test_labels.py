"""GFD-compatible node labels from inventories."""

from __future__ import annotations

from pathlib import Path

from agent.discovery import collect_inventory
from agent.labels import family, format_labels, node_labels, pci_gpu_mode, sanitise_product
from agent.sharing import load_configs
from drivers.contract.inventory import GpuHealth, HealthReason, Inventory
from drivers.nvml.session import open_nvml
from tests.support.sharing_builders import a100, inventory


def _l4(tmp_path: Path) -> Inventory:
    with open_nvml("l4-4x", tmp_path / "sim.json"):
        return collect_inventory(hostname="l4", simulated=True)


def test_whole_gpu_host_with_time_slicing(tmp_path: Path) -> None:
    cfg = load_configs("version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}")[
        "default"
    ]
    labels = node_labels(_l4(tmp_path), sharing=cfg)
    assert {k: v for k, v in labels.items() if k.startswith("nvidia.com/gpu.")} == {
        "nvidia.com/gpu.count": "4",
        "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
        "nvidia.com/gpu.memory": "23034",
        "nvidia.com/gpu.replicas": "4",
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/gpu.family": "ada-lovelace",
        "nvidia.com/gpu.compute.major": "8",
        "nvidia.com/gpu.compute.minor": "9",
        "nvidia.com/gpu.mode": "unknown",
    }
    assert labels["nvidia.com/mig.capable"] == "false"
    assert labels["nvidia.com/mps.capable"] == "false"
    assert "nvidia.com/mig.strategy" not in labels
    assert labels["nvidia.com/cuda.driver-version.full"] == "550.90.07"
    assert labels["nvidia.com/cuda.driver-version.major"] == "550"
    assert labels["nvidia.com/cuda.driver-version.revision"] == "07"
    assert labels["nvidia.com/cuda.runtime-version.full"] == "12.4"
    assert labels["gpufabric.io/sharing"] == "time-slicing"
    assert labels["gpufabric.io/health"] == "healthy"
    assert labels["gpufabric.io/mig.state"] == "unsupported"


def test_unshared_and_renamed_and_mps(tmp_path: Path) -> None:
    inv = _l4(tmp_path)
    plain = node_labels(inv)
    assert plain["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert plain["nvidia.com/gpu.replicas"] == "1" and plain["nvidia.com/gpu.sharing-strategy"] == "none"
    renamed = load_configs(
        "version: v1\nsharing: {timeSlicing: {renameByDefault: true, resources: [{name: nvidia.com/gpu, replicas: 2}]}}"
    )["default"]
    assert node_labels(inv, sharing=renamed)["nvidia.com/gpu.product"] == "NVIDIA-L4"
    mps = load_configs("version: v1\nsharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 3}]}}")["default"]
    labels = node_labels(inv, sharing=mps)
    assert labels["nvidia.com/gpu.sharing-strategy"] == "mps" and labels["nvidia.com/mps.capable"] == "true"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4-SHARED"


def test_mixed_mig_host() -> None:
    inv = inventory([a100(0, ["3g.20gb", "2g.10gb", "1g.5gb"]), a100(1, ["1g.5gb", "1g.5gb", "1g.5gb"])])
    cfg = load_configs(
        "version: v1\nflags: {migStrategy: mixed}\nsharing: {timeSlicing: {resources: "
        "[{name: nvidia.com/mig-1g.5gb, replicas: 2}]}}"
    )["default"]
    labels = node_labels(inv, sharing=cfg)
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["nvidia.com/mig.capable"] == "true"
    assert labels["nvidia.com/mig-1g.5gb.count"] == "4"
    assert labels["nvidia.com/mig-1g.5gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED"
    assert labels["nvidia.com/mig-1g.5gb.replicas"] == "2"
    assert labels["nvidia.com/mig-1g.5gb.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/mig-1g.5gb.memory"] == "4864"
    assert labels["nvidia.com/mig-1g.5gb.multiprocessors"] == "14"
    assert labels["nvidia.com/mig-3g.20gb.count"] == "1"
    assert labels["nvidia.com/mig-3g.20gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"
    assert labels["nvidia.com/mig-3g.20gb.replicas"] == "1"
    assert labels["nvidia.com/mig-3g.20gb.slices.gi"] == "3"
    assert labels["nvidia.com/mig-3g.20gb.slices.ci"] == "3"
    assert labels["nvidia.com/mig-2g.10gb.count"] == "1"
    # every GPU is MIG-enabled: the gpu.* labeler runs without the sharing config
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.replicas"] == "0"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["gpufabric.io/mig.state"] == "enabled"


def test_single_strategy_valid_and_invalid() -> None:
    uniform = inventory([a100(0, ["1g.5gb"] * 7), a100(1, ["1g.5gb"] * 7)])
    labels = node_labels(uniform, mig_strategy="single")
    assert labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels["nvidia.com/gpu.count"] == "14"
    assert labels["nvidia.com/gpu.memory"] == "4864"
    assert labels["nvidia.com/gpu.multiprocessors"] == "14"
    assert labels["nvidia.com/gpu.slices.gi"] == "1"
    mixed_types = inventory([a100(0, ["3g.20gb", "1g.5gb"]), a100(1, None)])
    bad = node_labels(mixed_types, mig_strategy="single")
    assert bad["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-INVALID"
    assert (bad["nvidia.com/gpu.count"], bad["nvidia.com/gpu.replicas"], bad["nvidia.com/gpu.memory"]) == (
        "0",
        "0",
        "0",
    )
    assert bad["nvidia.com/gpu.sharing-strategy"] == ""
    assert node_labels(mixed_types)["gpufabric.io/mig.state"] == "mixed"


def test_health_labels_take_the_worst_gpu() -> None:
    inv = inventory([a100(0, None), a100(1, None)])
    inv.gpus[1].health = GpuHealth(
        state="unhealthy",
        reasons=[HealthReason(code="xid-79", message="fell off", severity="unhealthy", since=inv.collected_at)],
    )
    labels = node_labels(inv)
    assert labels["gpufabric.io/health"] == "unhealthy"
    assert labels["gpufabric.io/health.unhealthy"] == "1" and labels["gpufabric.io/health.healthy"] == "1"


def test_value_rules() -> None:
    assert sanitise_product("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert sanitise_product("Tesla  T4 (rev. a1)") == "Tesla-T4-rev.-a1"
    assert [family(cc) for cc in ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0", "x")] == [
        "volta", "turing", "ampere", "ampere", "ada-lovelace", "hopper", "blackwell", "blackwell", "undefined",
    ]  # fmt: skip
    assert format_labels({"b": "2", "a": "1"}) == "a=1\nb=2\n"
    # every value is a legal Kubernetes label value
    import re

    legal = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    labels = node_labels(inventory([a100(0, ["3g.20gb", "2g.10gb"])]), mig_strategy="mixed")
    assert all(legal.match(v) and len(v) <= 63 for v in labels.values())


def test_gpu_mode_from_sysfs(tmp_path: Path) -> None:
    inv = inventory([a100(0, None)])
    assert pci_gpu_mode(inv, tmp_path) == "unknown"
    dev = tmp_path / "bus/pci/devices/0000:17:00.0"
    dev.mkdir(parents=True)
    (dev / "class").write_text("0x030200\n")
    assert pci_gpu_mode(inv, tmp_path) == "compute"
    assert node_labels(inv, gpu_mode=pci_gpu_mode(inv, tmp_path))["nvidia.com/gpu.mode"] == "compute"
