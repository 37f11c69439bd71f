"""The GPUs Cyborg should manage on a host, read from the gpufabric agent's last reported inventory.

The gpufabric agent writes the inventory the controller last accepted to ``inventory.json`` beside its state file
(``agent.state.save_reported_inventory``, schema ``gpufabric.inventory/v1``). Cyborg's agent driver reads that file
instead of discovering the GPUs a second time (NVML once per host, one view of health and MIG state).

Standard library only: this module runs inside cyborg-agent's environment, which has none of gpufabric's
dependencies (install gpufabric there with ``pip install --no-deps``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INVENTORY_SCHEMA = "gpufabric.inventory/v1"
# The resource class and owner trait Cyborg's own NVIDIA driver uses for a whole (passed-through) GPU, so device
# profiles written for it ask the same of ours: {"resources:PGPU": "1", "trait:CUSTOM_NVIDIA_20B5": "required"}.
RESOURCE_CLASS = "PGPU"
OWNER_TRAIT = "OWNER_CYBORG"
# GPUs in these health states are left out: Cyborg would otherwise hand them to a server.
EXCLUDED_HEALTH = frozenset({"unhealthy", "quarantined"})


class InventoryError(ValueError):
    """The inventory file is missing, unreadable or not a gpufabric inventory."""


@dataclass(frozen=True)
class CyborgGpu:
    """One GPU as a Cyborg device with one deployable (a PGPU resource provider under the compute node)."""

    address: str  # PCI address 0000:17:00.0
    vendor_id: str  # 10de
    product_id: str  # 20b5
    model: str  # the NVML name, e.g. NVIDIA A100 80GB PCIe
    uuid: str
    traits: tuple[str, ...]

    def deployable_name(self, host: str) -> str:
        """``<host>_<PCI address>`` as Cyborg's NVIDIA driver names it; Placement names the provider after it."""
        return re.sub(r"[^a-zA-Z0-9_:.\-]", "_", f"{host}_{self.address}")


def pci_address(bus_id: str) -> str:
    """NVML's ``00000000:17:00.0`` as the usual ``0000:17:00.0`` (lower case)."""
    m = re.fullmatch(r"([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])", bus_id.strip())
    if m is None:
        raise InventoryError(f"GPU bus id {bus_id!r} is not a PCI address (domain:bus:device.function)")
    domain, bus, device, function = m.groups()
    return f"{domain[-4:]}:{bus}:{device}.{function}".lower()


def pci_ids(device_id: str) -> tuple[str, str]:
    """NVML's ``pciDeviceId`` (``0x20B510DE``: product id in the upper 16 bits) as (vendor id, product id)."""
    try:
        value = int(device_id, 16)
    except ValueError:
        raise InventoryError(f"GPU PCI device id {device_id!r} is not hexadecimal") from None
    return f"{value & 0xFFFF:04x}", f"{value >> 16:04x}"


def model_trait(model: str) -> str:
    """``NVIDIA A100 80GB PCIe`` -> ``CUSTOM_GPU_A100_80GB_PCIE`` (what gpufabric's flavors and profiles name)."""
    slug = re.sub(r"[^A-Z0-9]+", "_", model.upper().removeprefix("NVIDIA").strip()).strip("_")
    return f"CUSTOM_GPU_{slug}"


def cyborg_gpus(inventory: dict[str, Any]) -> list[CyborgGpu]:
    """The healthy GPUs of a ``gpufabric.inventory/v1`` document, in index order."""
    if not isinstance(inventory, dict) or inventory.get("schema_version") != INVENTORY_SCHEMA:
        raise InventoryError(f"not a {INVENTORY_SCHEMA} document")
    out = []
    for gpu in sorted(inventory.get("gpus") or [], key=lambda g: int(g.get("index", 0))):
        if (gpu.get("health") or {}).get("state") in EXCLUDED_HEALTH:
            continue
        try:
            address = pci_address(gpu["pci"]["bus_id"])
            vendor, product = pci_ids(gpu["pci"]["device_id"])
            model, uuid = str(gpu["name"]), str(gpu["uuid"])
        except (KeyError, TypeError):
            raise InventoryError(f"GPU {gpu.get('index')!r} lacks name, uuid or pci bus_id/device_id") from None
        traits = (OWNER_TRAIT, f"CUSTOM_NVIDIA_{product.upper()}", model_trait(model))
        out.append(CyborgGpu(address, vendor, product, model, uuid, traits))
    return out


def read_inventory(path: Path) -> list[CyborgGpu]:
    """The GPUs of the inventory file at ``path`` (``InventoryError`` if it cannot be used)."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InventoryError(f"{path} does not exist (has the gpufabric agent reported yet?)") from None
    except (OSError, ValueError) as exc:
        raise InventoryError(f"{path}: {exc}") from None
    return cyborg_gpus(document)
