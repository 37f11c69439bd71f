"""A GPU model's MIG geometry from the GPU catalog: memory and compute slices, and per GPU-instance profile its id,
size, memory, instance cap and placements. Pure facts; the controller's placement decides with them
(``controller.placement.mig``), the dashboard draws with them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from drivers.gpus.catalog import load_catalog


@dataclass(frozen=True, slots=True)
class MigProfileGeom:
    name: str
    profile_id: int
    slices: int
    memory_mib: int
    max_instances: int
    placements: tuple[tuple[int, int], ...]

    @property
    def is_variant(self) -> bool:
        """``+me`` style variants share geometry with their base profile and are not weighed separately."""
        return "+" in self.name or "-" in self.name


@dataclass(frozen=True, slots=True, eq=False)
class MigGeometry:
    model: str
    memory_slices: int
    compute_slices: int
    profiles: dict[str, MigProfileGeom]

    def profile(self, name: str) -> MigProfileGeom | None:
        return self.profiles.get(name.removeprefix("MIG ").strip())


@cache
def geometry(model: str) -> MigGeometry | None:
    """The MIG geometry of a GPU model (short name or NVML name); ``None`` if unknown or not MIG-capable."""
    try:
        product = load_catalog().product(model)
    except KeyError:
        return None
    if not product.mig_capable:
        return None
    profiles = {
        p.name: MigProfileGeom(p.name, p.profile_id, p.slices, p.memory_mib, p.max_instances, tuple(p.placements))
        for p in product.mig_profiles
    }
    compute = max(p.slices for p in profiles.values())
    return MigGeometry(product.model, product.memory_slices, compute, profiles)
