"""Store an agent's inventory: the host row, one row per GPU, one row per MIG instance.

Rows are matched by GPU UUID and MIG GPU-instance id so their ids stay stable across reports
(placement claims refer to them); rows for GPUs or instances that vanished are deleted.
"""

from __future__ import annotations

from datetime import datetime

from controller.store.models import Device, Host, MigInstance
from drivers.contract.inventory import Gpu, Inventory

_HEALTH_ORDER = ["healthy", "degraded", "unhealthy", "quarantined"]


def host_health(inventory: Inventory) -> str:
    worst = 0
    for gpu in inventory.gpus:
        worst = max(worst, _HEALTH_ORDER.index(gpu.health.state))
    return _HEALTH_ORDER[worst] if inventory.gpus else "unknown"


def store_inventory(host: Host, inventory: Inventory, content_hash: str, generation: int, now: datetime) -> None:
    host.inventory = inventory.model_dump(mode="json")
    host.inventory_hash = content_hash
    host.inventory_generation = generation
    host.inventory_at = now
    host.agent_version = inventory.host.agent_version
    host.simulated = inventory.host.simulated
    host.health = host_health(inventory)
    by_uuid = {d.uuid: d for d in host.devices}
    seen: set[str] = set()
    for gpu in inventory.gpus:
        seen.add(gpu.uuid)
        device = by_uuid.get(gpu.uuid)
        if device is None:
            device = Device(uuid=gpu.uuid, index=gpu.index, model=gpu.name, memory_mib=gpu.memory_total_mib)
            host.devices.append(device)
        _update_device(device, gpu, now)
    for device in list(host.devices):
        if device.uuid not in seen:
            host.devices.remove(device)


def _update_device(device: Device, gpu: Gpu, now: datetime) -> None:
    device.index = gpu.index
    device.model = gpu.name
    device.architecture = gpu.architecture
    device.memory_mib = gpu.memory_total_mib
    device.health = gpu.health.state
    device.mig_mode = gpu.mig.state
    device.pci_bus_id = gpu.pci.bus_id
    device.slices = [s.model_dump(mode="json") for s in gpu.slices]
    device.details = {
        "compute_capability": gpu.compute_capability,
        "nvlink": gpu.nvlink.model_dump(mode="json"),
        "health": gpu.health.model_dump(mode="json"),
        "vgpu": gpu.vgpu.model_dump(mode="json") if gpu.vgpu else None,
        "compute_mode": gpu.compute_mode,
    }
    device.updated_at = now
    by_gi = {m.gpu_instance_id: m for m in device.mig_instances}
    seen: set[int] = set()
    for inst in gpu.mig_instances:
        seen.add(inst.gpu_instance_id)
        row = by_gi.get(inst.gpu_instance_id)
        if row is None:
            row = MigInstance(gpu_instance_id=inst.gpu_instance_id)
            device.mig_instances.append(row)
        row.uuid = inst.uuid
        row.profile = inst.profile
        row.profile_id = inst.profile_id
        row.placement_start = inst.placement.start
        row.placement_size = inst.placement.size
        row.memory_mib = inst.memory_mib
        row.sm_count = inst.sm_count
        row.busy = bool(inst.processes)
    for row in list(device.mig_instances):
        if row.gpu_instance_id not in seen:
            device.mig_instances.remove(row)
