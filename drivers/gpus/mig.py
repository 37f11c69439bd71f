"""A GPU's MIG geometry: memory and compute slices, and per GPU-instance profile its id, size, memory, instance cap
and placements. Pure facts, from the GPU catalog (``geometry(model)``: the controller) or from the profile table a
GPU's driver reports (``MigGeometry.from_profile_table``: the agent, through NVML). The one MIG scorer
(``drivers.gpus.mig_score``) decides with them on both sides; the dashboard draws with them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

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

    def facts(self) -> tuple[int, int, tuple[MigProfileGeom, ...]]:
        """Everything a placement decision depends on (not the model's name), profiles by id: two geometries
        with equal facts get equal decisions from the scorer."""
        return self.memory_slices, self.compute_slices, tuple(sorted(self.profiles.values(), key=_by_id))

    @classmethod
    def from_profile_table(cls, model: str, profiles: Iterable[MigProfileGeom]) -> MigGeometry | None:
        """The geometry of a GPU whose driver reports ``profiles`` (the agent reads them through NVML, which is the
        truth on a real GPU): memory slices = the end of the furthest placement (8 on A100/H100, 4 on A30),
        compute slices = those of the largest profile (7g -> 7). ``None`` for an empty table.

        Interned: the same model and table give the same object, so the scorer's caches, keyed by geometry, are
        shared across planning runs instead of growing with each one.
        """
        table = tuple(sorted(profiles, key=_by_id))
        return _interned(model, table) if table else None


def _by_id(p: MigProfileGeom) -> tuple[int, str]:
    return p.profile_id, p.name


@lru_cache(maxsize=64)
def _interned(model: str, table: tuple[MigProfileGeom, ...]) -> MigGeometry:
    memory = max((start + size for p in table for start, size in p.placements), default=0)
    compute = max(p.slices for p in table)
    return MigGeometry(model, memory, compute, {p.name: p for p in table})


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
