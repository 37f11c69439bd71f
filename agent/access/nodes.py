"""Which device nodes a lease's slices need, from this cycle's inventory and the driver's ``mig-minors`` list.

A whole GPU, a time-sliced or MPS share: ``nvidia<minor>``. A MIG instance: its parent GPU's node plus the
capability nodes ``nvidia-caps/nvidia-cap<N>`` of its GPU instance and of each of its compute instances, ``N``
as ``mig-minors`` lists ``gpu<minor>/gi<id>/access`` and ``gpu<minor>/gi<id>/ci<id>/access``. The shared control
nodes (``nvidiactl``, ``nvidia-uvm``, the MIG ``config`` and ``monitor`` capabilities) are not per lease and are
left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.access.groups import AccessError
from drivers.contract.inventory import Gpu, Inventory
from drivers.contract.protocol import LeasedSlice

_GPU_NODE = re.compile(r"^nvidia(\d+)$")


@dataclass
class LeaseNodes:
    nodes: set[Path] = field(default_factory=set)
    visible: list[str] = field(default_factory=list)


def read_mig_minors(path: Path) -> dict[str, int]:
    """``gpu0/gi1/ci0/access`` -> minor, as the driver lists them (empty when the file is missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, minor = line.strip().rpartition(" ")
        if name and minor.isdigit():
            out[name] = int(minor)
    return out


def gpu_node(dev_root: Path, gpu: Gpu) -> Path:
    if gpu.minor_number is None:
        raise AccessError(f"GPU {gpu.index} ({gpu.uuid}): NVML gives no minor number, so no device node is known")
    return dev_root / f"nvidia{gpu.minor_number}"


def _cap(dev_root: Path, minors: dict[str, int], name: str) -> Path:
    if name not in minors:
        raise AccessError(f"mig-minors lists no {name}: cannot find its capability node")
    return dev_root / "nvidia-caps" / f"nvidia-cap{minors[name]}"


def _add_slice(entry: LeaseNodes, s: LeasedSlice, gpu: Gpu, dev_root: Path, minors: dict[str, int]) -> bool:
    """Add a slice's nodes; False when its MIG instance does not exist yet."""
    if s.kind == "vgpu":
        return True  # a hypervisor's mediated device, not a node the tenant opens on this host
    entry.nodes.add(gpu_node(dev_root, gpu))
    if s.kind != "mig":
        if s.device_uuid not in entry.visible:
            entry.visible.append(s.device_uuid)
        return True
    instance = next((m for m in gpu.mig_instances if s.mig_uuid and m.uuid == s.mig_uuid), None)
    if instance is None:
        return False
    prefix = f"gpu{gpu.minor_number}/gi{instance.gpu_instance_id}"
    entry.nodes.add(_cap(dev_root, minors, f"{prefix}/access"))
    for ci in instance.compute_instances:
        entry.nodes.add(_cap(dev_root, minors, f"{prefix}/ci{ci.id}/access"))
    entry.visible.append(instance.uuid or "")
    return True


def lease_nodes(
    slices: list[LeasedSlice], inventory: Inventory, dev_root: Path, minors: dict[str, int]
) -> tuple[dict[str, LeaseNodes], dict[str, str]]:
    """Lease id -> the nodes and ``CUDA_VISIBLE_DEVICES`` entries of its slices on this host, and lease id -> why
    its nodes cannot be known. A lease whose MIG instance does not exist yet is left out of both (it is granted
    once the instance is there)."""
    gpus = {g.uuid: g for g in inventory.gpus}
    out: dict[str, LeaseNodes] = {}
    errors: dict[str, str] = {}
    waiting: set[str] = set()
    for s in slices:
        gpu = gpus.get(s.device_uuid)
        try:
            if gpu is None:
                raise AccessError(f"this host has no GPU {s.device_uuid}")
            if not _add_slice(out.setdefault(s.lease, LeaseNodes()), s, gpu, dev_root, minors):
                waiting.add(s.lease)
        except AccessError as exc:
            errors.setdefault(s.lease, str(exc))
    return {k: v for k, v in out.items() if k not in waiting and k not in errors}, errors


def managed_nodes(inventory: Inventory, dev_root: Path, minors: dict[str, int]) -> set[Path]:
    """Every per-lease node this host has: each GPU's and the capability nodes of its existing MIG instances."""
    out: set[Path] = set()
    for gpu in inventory.gpus:
        if gpu.minor_number is None:
            continue
        out.add(gpu_node(dev_root, gpu))
        for m in gpu.mig_instances:
            prefix = f"gpu{gpu.minor_number}/gi{m.gpu_instance_id}"
            names = [f"{prefix}/access", *(f"{prefix}/ci{ci.id}/access" for ci in m.compute_instances)]
            out.update(dev_root / "nvidia-caps" / f"nvidia-cap{minors[n]}" for n in names if n in minors)
    return out
