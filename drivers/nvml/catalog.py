"""GPU product facts for the simulated NVML (and for anyone who needs MIG profile geometry).

The data lives in ``drivers/nvml/data/catalog.yaml`` (package data). ``load_catalog()`` parses it once.
"""

from __future__ import annotations

import math
import re
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

# NVML_GPU_INSTANCE_PROFILE_* index -> name attribute suffix.
_PROFILE_INDEX_ATTRS: dict[int, tuple[str, ...]] = {7: ("me",), 8: ("me",)}
GI_PROFILE_1_SLICE_REV2 = 9


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MigProfile(_Frozen):
    """One GPU-instance profile as ``nvmlDeviceGetGpuInstanceProfileInfo`` reports it."""

    name: str
    profile_id: int
    nvml_profile_index: int
    slices: int
    memory_mib: int
    sm_count: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg: int
    ofa: int
    max_instances: int
    placements: tuple[tuple[int, int], ...]
    derived: bool = False

    @property
    def placement_size(self) -> int:
        return self.placements[0][1]

    @property
    def attrs(self) -> tuple[str, ...]:
        return _PROFILE_INDEX_ATTRS.get(self.nvml_profile_index, ())


class CiProfile(_Frozen):
    """A compute-instance profile offered inside a GI (index == CI profile id)."""

    index: int
    slices: int
    max_instances: int


class VgpuType(_Frozen):
    """A vGPU type as NVIDIA's vGPU type tables list it (the release is cited in catalog.yaml).

    ``mig_profile`` names the MIG GPU-instance profile a MIG-backed type occupies (``A100-3-20C`` ->
    ``3g.20gb``); time-sliced types have none. ``mdev_type`` is the Linux mdev type id the vGPU manager
    registers (``nvidia-476``) where a source gives it; ids differ between driver releases.
    """

    type_id: int
    name: str
    vgpu_class: str = Field(alias="class")
    framebuffer_mib: int
    max_instances: int
    mig_profile: str | None = None
    mdev_type: str | None = None

    @property
    def mig_backed(self) -> bool:
        return self.mig_profile is not None


class Alias(_Frozen):
    name: str
    pci_device_id: int | None = None
    # The board sold under this name has its own vGPU type names (A100 PCIe 40GB: A100-*, HGX: A100X-*).
    vgpu_types: tuple[VgpuType, ...] | None = None


# A MIG-backed type is named <board>-<compute slices>-<GB>C[ME] and its profile <slices>g.<GB>gb[+me].
_MIG_BACKED_NAME = re.compile(r"^[A-Z0-9]+-(?P<slices>\d)-(?P<gb>\d+)C(?P<me>ME)?$")


def check_vgpu_types(owner: str, types: tuple[VgpuType, ...], profiles: tuple[MigProfile, ...]) -> None:
    """Refuse a vGPU table that contradicts itself or the product's MIG table (``ValueError`` naming the type).

    Every MIG-backed type must name a MIG profile of the product whose frame buffer is the type's within the
    tables' rounding (the type's is the profile's GB in MiB: at most 1 GiB above what NVML reports for the
    profile), whose name agrees with the type's, and whose instance count bounds the type's.
    """
    seen: set[str] = set()
    for t in types:
        if t.name in seen:
            raise ValueError(f"{owner}: vGPU type {t.name} listed twice")
        seen.add(t.name)
        if t.framebuffer_mib <= 0 or t.max_instances <= 0:
            raise ValueError(f"{owner}: vGPU type {t.name}: framebuffer_mib and max_instances must be > 0")
        if t.mig_profile is None:
            if _MIG_BACKED_NAME.match(t.name):
                raise ValueError(f"{owner}: vGPU type {t.name} is named like a MIG-backed type but has no mig_profile")
            continue
        profile = next((p for p in profiles if p.name == t.mig_profile), None)
        if profile is None:
            raise ValueError(f"{owner}: vGPU type {t.name}: mig_profile {t.mig_profile!r} is not a MIG profile of it")
        m = _MIG_BACKED_NAME.match(t.name)
        expected = f"{m['slices']}g.{m['gb']}gb{'+me' if m['me'] else ''}" if m else None
        if expected != profile.name:
            raise ValueError(f"{owner}: vGPU type {t.name} does not name MIG profile {profile.name}")
        if not 0 <= t.framebuffer_mib - profile.memory_mib <= 1024:
            raise ValueError(
                f"{owner}: vGPU type {t.name}: framebuffer {t.framebuffer_mib} MiB is not the {profile.name} "
                f"profile's {profile.memory_mib} MiB within 1 GiB"
            )
        if t.max_instances > profile.max_instances:
            raise ValueError(
                f"{owner}: vGPU type {t.name}: {t.max_instances} instances, {profile.name} allows "
                f"{profile.max_instances}"
            )


class Product(_Frozen):
    name: str
    model: str
    aliases: tuple[Alias, ...] = ()
    architecture: str
    nvml_architecture: int
    compute_capability: tuple[int, int]
    memory_mib: int
    pci_device_id: int | None
    pci_subsystem_id: int | None = None
    sm_total: int
    family: str
    mig_capable: bool
    max_mig_instances: int = 0
    memory_slices: int = 0
    ci_profiles: dict[str, tuple[CiProfile, ...]] = Field(default_factory=dict)
    mig_profiles: tuple[MigProfile, ...] = ()
    vgpu_types: tuple[VgpuType, ...] = ()
    derived_note: str | None = None

    @model_validator(mode="after")
    def _check_mig(self) -> Product:
        if self.mig_capable and not (self.mig_profiles and self.memory_slices and self.max_mig_instances):
            raise ValueError(f"{self.name}: MIG-capable product without a MIG table")
        check_vgpu_types(self.name, self.vgpu_types, self.mig_profiles)
        for alias in self.aliases:
            if alias.vgpu_types is not None:
                check_vgpu_types(alias.name, alias.vgpu_types, self.mig_profiles)
        return self

    def profile_by_id(self, profile_id: int) -> MigProfile | None:
        return next((p for p in self.mig_profiles if p.profile_id == profile_id), None)

    def profile_by_index(self, index: int) -> MigProfile | None:
        return next((p for p in self.mig_profiles if p.nvml_profile_index == index), None)

    def profile_by_name(self, name: str) -> MigProfile | None:
        wanted = name.removeprefix("MIG ").strip()
        return next((p for p in self.mig_profiles if p.name == wanted), None)

    def ci_profiles_for(self, gi: MigProfile) -> tuple[CiProfile, ...]:
        """Compute-instance profiles valid inside a GI of profile ``gi``."""
        if gi.nvml_profile_index == GI_PROFILE_1_SLICE_REV2 and "1-rev2" in self.ci_profiles:
            return self.ci_profiles["1-rev2"]
        return self.ci_profiles.get(str(gi.slices), ())

    def ci_sm_count(self, gi: MigProfile, ci: CiProfile) -> int:
        """SMs of a CI: the whole GI when it spans all compute slices, else slices x the 1g SM count."""
        if ci.slices >= gi.slices:
            return gi.sm_count
        base = self.profile_by_index(0)
        return ci.slices * (base.sm_count if base else gi.sm_count // gi.slices)

    def ci_name(self, gi: MigProfile, ci: CiProfile) -> str:
        return mig_profile_name(gi.memory_mib, self.memory_mib, gi.slices, ci.slices, gi.attrs)

    def vgpu_type(self, type_id: int) -> VgpuType | None:
        return next((v for v in self.vgpu_types if v.type_id == type_id), None)


class Catalog(_Frozen):
    schema_: str = Field(alias="schema")
    products: dict[str, Product]

    def product(self, key: str) -> Product:
        """Look a product up by NVML name, alias or short model name (case-insensitive).

        An alias yields the product under the alias's name (and PCI device id, if it has one).
        Raises ``KeyError`` listing the known names.
        """
        k = key.strip().lower()
        for p in self.products.values():
            if k in (p.name.lower(), p.model.lower()):
                return p
            for a in p.aliases:
                if a.name.lower() == k:
                    upd: dict[str, Any] = {"name": a.name, "aliases": ()}
                    if a.pci_device_id is not None:
                        upd["pci_device_id"] = a.pci_device_id
                    if a.vgpu_types is not None:
                        upd["vgpu_types"] = a.vgpu_types
                    return p.model_copy(update=upd)
        raise KeyError(f"unknown GPU product {key!r}; known: {', '.join(self.known_names())}")

    def known_names(self) -> list[str]:
        out: list[str] = []
        for p in self.products.values():
            out.append(f"{p.model} ({p.name})")
        return out

    def mig_capable(self) -> list[Product]:
        return [p for p in self.products.values() if p.mig_capable]

    def boards(self) -> list[Product]:
        """Every product and every alias that names a board of its own (with its own vGPU types)."""
        out: list[Product] = []
        for p in self.products.values():
            out.append(p)
            out += [self.product(a.name) for a in p.aliases]
        return out

    def vgpu_type_named(self, name: str) -> tuple[Product, VgpuType] | None:
        """The board and type a vGPU type name (``A100-3-20C``, ``NVIDIA A100-3-20C``) belongs to."""
        wanted = name.removeprefix("NVIDIA ").removeprefix("GRID ").strip().upper()
        for board in self.boards():
            for t in board.vgpu_types:
                if t.name.upper() == wanted:
                    return board, t
        return None

    @model_validator(mode="after")
    def _unique_vgpu_ids(self) -> Catalog:
        owner: dict[int, str] = {}
        for board in self.boards():
            for t in board.vgpu_types:
                if owner.setdefault(t.type_id, t.name) != t.name:
                    raise ValueError(f"vGPU type id {t.type_id} used by {owner[t.type_id]} and {t.name}")
        return self


def go_round(x: float) -> int:
    """Go's math.Round for non-negative values: halves away from zero."""
    return math.floor(x + 0.5)


def mig_profile_name(
    memory_mib_profile: int,
    device_memory_mib: int,
    gi_slices: int,
    ci_slices: int | None = None,
    attrs: tuple[str, ...] | list[str] = (),
) -> str:
    """Name a MIG profile from its memory the way go-nvlib does (``<C>c.<G>g.<GB>gb[+attr]``)."""
    total_bytes = device_memory_mib * 2**20
    frac = math.ceil(memory_mib_profile * 2**20 / total_bytes * 8) / 8
    gb = go_round(frac * math.ceil(total_bytes / 2**30))
    name = f"{gi_slices}g.{gb}gb"
    if ci_slices is not None and ci_slices != gi_slices:
        name = f"{ci_slices}c.{name}"
    if attrs:
        name += "+" + ",".join(attrs)
    return name


@cache
def load_catalog() -> Catalog:
    text = resources.files("drivers.nvml").joinpath("data/catalog.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    products = {p["name"]: p for p in raw["products"]}
    return Catalog.model_validate({"schema": raw["schema"], "products": products})
