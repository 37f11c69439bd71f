"""What a lease on an agent-run host hands out (static and fake backends): per host, the devices, MIG UUIDs and
vGPU instances, the ``CUDA_VISIBLE_DEVICES`` value to use and the access the host's agent granted
(``controller.backends.agent_access``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.backends.agent_access import host_access
from controller.backends.contract import ProvisionResult
from controller.placement import Allocation
from drivers.contract.inventory import DeviceAccess

# What a vGPU allocation hands out (raises ProvisionFailed where no hypervisor can attach one).
VgpuAttach = Callable[[Allocation], dict[str, Any]]


def describe_slices(
    kind: str,
    allocations: list[Allocation],
    attach_vgpu: VgpuAttach,
    lease_id: str = "",
    access: Mapping[str, DeviceAccess | None] | None = None,
) -> ProvisionResult:
    """``ready`` with, per host, the devices, MIG UUIDs and vGPU instances, the ``CUDA_VISIBLE_DEVICES`` value to
    use and the device access granted (``access``: what each host's agent reported); ``pending`` while a MIG
    instance created on demand has not been reported by the host's agent yet, or an enforcing agent has not
    reported the lease's grant."""
    waiting: list[str] = []
    hosts: dict[str, dict[str, Any]] = {}
    for a in allocations:
        entry = hosts.setdefault(
            a.host_id, {"host": a.host_id, "devices": [], "mig_devices": [], "slices": [], "visible": []}
        )
        slice_doc: dict[str, Any] = {"kind": a.kind, "model": a.model, "device": a.device_uuid, "units": a.units}
        if a.kind == "vgpu":
            slice_doc.update(attach_vgpu(a))
        elif a.kind == "mig":
            slice_doc["profile"] = a.profile
            if a.mig_uuid is None:
                waiting.append(f"MIG {a.profile} on {a.device_uuid} ({a.host_id})")
                continue
            slice_doc["mig_uuid"] = a.mig_uuid
            entry["mig_devices"].append(a.mig_uuid)
            entry["visible"].append(a.mig_uuid)
        elif a.device_uuid not in entry["devices"]:
            entry["devices"].append(a.device_uuid)
            entry["visible"].append(a.device_uuid)
        entry["slices"].append(slice_doc)
    if waiting:
        return ProvisionResult("pending", message="waiting for the agent to create " + ", ".join(waiting))
    nodes = []
    for entry in hosts.values():
        visible = entry.pop("visible")
        entry["cuda_visible_devices"] = ",".join(visible)
        entry["env"] = {"CUDA_VISIBLE_DEVICES": entry["cuda_visible_devices"]}
        granted = host_access(lease_id, entry["host"], entry["cuda_visible_devices"], (access or {}).get(entry["host"]))
        if "waiting" in granted:
            waiting.append(granted["waiting"])
        entry["access"] = granted
        nodes.append(entry)
    if waiting:
        return ProvisionResult("pending", message="waiting for " + ", ".join(waiting))
    result: dict[str, Any] = {"backend": kind, "nodes": nodes}
    if len(nodes) == 1:
        result["host"] = nodes[0]["host"]
        result["cuda_visible_devices"] = nodes[0]["cuda_visible_devices"]
        result["access"] = nodes[0]["access"]
    elif nodes:
        result["access"] = {"hosts": [n["access"] for n in nodes]}
    return ProvisionResult("ready", result)
