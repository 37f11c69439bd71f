"""Map what OpenStack says about GPUs (PCI ids, resource classes, traits, vGPU type names) to the GPU catalog."""

from __future__ import annotations

import re
from functools import cache

from drivers.nvml.catalog import Product, VgpuType, load_catalog

NVIDIA_VENDOR_ID = 0x10DE
# Prefixes that name a GPU model in traits and resource classes: CUSTOM_GPU_H100, baremetal-gpu-a100-80gb,
# CUSTOM_BAREMETAL_GPU_H100, CUSTOM_GPU_A100_80GB.
_MODEL_PREFIXES = ("CUSTOM_BAREMETAL_GPU_", "CUSTOM_GPU_", "BAREMETAL_GPU_", "BAREMETAL-GPU-", "GPU_", "GPU-")
_VGPU_TRAIT_PREFIX = "CUSTOM_VGPU_"


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


@cache
def _by_pci_device() -> dict[int, Product]:
    """PCI device id (the 16-bit device part) -> product, aliases included (A100 80GB PCIe is 0x20b5)."""
    catalog = load_catalog()
    out: dict[int, Product] = {}
    for product in catalog.products.values():
        if product.pci_device_id is not None:
            out.setdefault(product.pci_device_id >> 16, product)
        for alias in product.aliases:
            if alias.pci_device_id is not None:
                out.setdefault(alias.pci_device_id >> 16, catalog.product(alias.name))
    return out


def product_for_pci(vendor_id: int | str, device_id: int | str) -> Product | None:
    """The catalog product for an NVIDIA PCI id (``"10de"``, ``"0x2330"`` or ints); None for other vendors/unknown."""
    vendor = int(vendor_id, 16) if isinstance(vendor_id, str) else vendor_id
    if vendor != NVIDIA_VENDOR_ID:
        return None
    device = int(device_id, 16) if isinstance(device_id, str) else device_id
    return _by_pci_device().get(device)


def product_for_name(text: str) -> Product | None:
    """The catalog product a model token names (``H100``, ``A100_80GB``, ``l40s``); None if none does.

    An exact model/alias match wins; otherwise the first catalog product whose model starts with the token (so
    ``H100`` is the H100 SXM 80GB, ``A100`` the A100 40GB), which is how operators abbreviate.
    """
    token = _norm(text)
    if not token:
        return None
    catalog = load_catalog()
    for product in catalog.products.values():
        names = [product.model, product.name, *(a.name for a in product.aliases)]
        for name in names:
            if _norm(name) == token or _norm(name.removeprefix("NVIDIA ")) == token:
                return catalog.product(name)
    for product in catalog.products.values():
        if _norm(product.model).startswith(token):
            return product
    return None


def model_token(name: str) -> str | None:
    """The model part of a GPU trait or resource class (``CUSTOM_GPU_H100`` -> ``H100``); None if not GPU-named."""
    upper = name.upper()
    for prefix in _MODEL_PREFIXES:
        if upper.startswith(prefix):
            rest = name[len(prefix) :]
            return rest or None
    return None


def product_for_label(name: str) -> Product | None:
    """The product a GPU trait / resource class names (``CUSTOM_GPU_A100_80GB``, ``baremetal-gpu-h100``)."""
    token = model_token(name)
    return product_for_name(token) if token else None


def vgpu_type_for(name: str, product: Product | None = None) -> tuple[Product, VgpuType] | None:
    """Catalog facts for a vGPU type named ``L40S-6C``, ``CUSTOM_VGPU_L40S_6C``, ``nvidia-L40S-6C``,
    ``CUSTOM_VGPU_A100_3_20C`` (MIG-backed) or by its mdev type id ``nvidia-476``.

    The board the type belongs to comes back with it (an A100 PCIe 40GB's types are ``A100-*``, the HGX board's
    ``A100X-*``). With ``product`` only boards of that GPU model are searched. None when the catalog does not
    know the type.
    """
    raw = name.upper().strip()
    if raw.startswith(_VGPU_TRAIT_PREFIX):
        raw = raw[len(_VGPU_TRAIT_PREFIX) :]
    mdev = raw.lower() if re.fullmatch(r"NVIDIA-\d+", raw) else None
    raw = raw.removeprefix("NVIDIA-").removeprefix("NVIDIA ").removeprefix("GRID ")
    token = _norm(raw)
    for board in _boards():
        if product is not None and board.model != product.model:
            continue
        for vgpu in board.vgpu_types:
            if (mdev is not None and vgpu.mdev_type == mdev) or (mdev is None and _norm(vgpu.name) == token):
                return board, vgpu
    return None


def vgpu_type_from_traits(
    traits: list[str] | tuple[str, ...], product: Product | None
) -> tuple[Product, VgpuType] | None:
    """The vGPU type a pGPU provider's ``CUSTOM_VGPU_<TYPE>`` trait names (the type its mdevs are created with)."""
    for trait in traits:
        if trait.upper().startswith(_VGPU_TRAIT_PREFIX):
            found = vgpu_type_for(trait, product)
            if found is not None:
                return found
    return None


def gpu_instance_layout(board: Product, vgpu: VgpuType, count: int) -> list[dict[str, int | str]]:
    """The GPU instances a pGPU needs to host ``count`` vGPUs of a MIG-backed type: ``count`` instances of the
    type's profile at the lowest placements that do not overlap.

    NVIDIA's vGPU manager creates a MIG-backed vGPU on an existing GPU instance of the type's profile, and Nova's
    Placement reports only the number of vGPUs (``VGPU`` total), never the instances: this is where gpufabric
    puts them, so a lease on the pGPU occupies one MIG placement. Raises ``ValueError`` when they do not fit.
    """
    profile = board.profile_by_name(vgpu.mig_profile or "")
    if profile is None:
        raise ValueError(f"{vgpu.name} is not a MIG-backed type of {board.name}")
    if count > vgpu.max_instances:
        raise ValueError(f"{board.name}: {count} x {vgpu.name}, at most {vgpu.max_instances} fit on one GPU")
    used = 0
    out: list[dict[str, int | str]] = []
    for start, size in sorted(profile.placements):
        bits = ((1 << size) - 1) << start
        if len(out) < count and not used & bits:
            used |= bits
            out.append({"profile": profile.name, "start": start, "size": size})
    if len(out) < count:
        raise ValueError(f"{board.name}: only {len(out)} x {profile.name} fit, {count} asked")
    return out


@cache
def _boards() -> tuple[Product, ...]:
    return tuple(load_catalog().boards())
