"""GPU product facts for the simulated NVML (and for anyone who needs MIG profile geometry).

The data lives in ``drivers/nvml/data/catalog.yaml`` (package data). ``load_catalog()`` parses it once.
"""

from __future__ import annotations

import math
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
    type_id: int
    name: str
    vgpu_class: str = Field(alias="class")
    framebuffer_mib: int
    max_instances: int


class Alias(_Frozen):
    name: str
    pci_device_id: int | None = None


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
                    return p.model_copy(update=upd)
        raise KeyError(f"unknown GPU product {key!r}; known: {', '.join(self.known_names())}")

    def known_names(self) -> list[str]:
        out: list[str] = []
        for p in self.products.values():
            out.append(f"{p.model} ({p.name})")
        return out

    def mig_capable(self) -> list[Product]:
        return [p for p in self.products.values() if p.mig_capable]


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
