"""Validation of the documents admins set as desired state: mig-parted configs and device-plugin sharing.

The documents are parsed with the wire contract's models (``drivers.contract.desired``), the ones the agent
parses them with, so nothing accepted here is refused by an agent's parser. Where the GPUs the layout will
land on are known (a host's devices, the hosts of a pool), the selected MIG config is also checked against
their models in the GPU catalog: profiles the GPU does not offer, more instances of a profile than it holds,
and profiles that do not fit together on one GPU are refused too. GPUs whose model is not in the catalog are
left to the agent, which checks against what NVML reports and says what it could not apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from controller.placement.mig import Layout, add, free_placements, geometry
from drivers.contract.desired import parse_mig_desired, parse_sharing_desired
from drivers.contract.errors import DesiredStateError, MigConfigError
from drivers.contract.mig import MigConfigEntry, MigPartedConfig, is_compute_instance_profile
from drivers.contract.protocol import MigDesired, SharingDesired
from drivers.contract.sharing import DevicePluginConfig
from drivers.gpus.catalog import load_catalog

__all__ = [
    "DesiredStateError",
    "GpuFacts",
    "check_layout_fits",
    "validate_mig",
    "validate_sharing",
]


@dataclass(frozen=True)
class GpuFacts:
    """What the controller knows of one GPU a layout will be applied to."""

    host: str
    index: int
    model: str


def validate_mig(mig: MigDesired, source: str = "mig.config") -> MigPartedConfig:
    """The parsed document; raises ``MigConfigError`` (a ``DesiredStateError``) naming the field."""
    return parse_mig_desired(mig, source)


def validate_sharing(sharing: SharingDesired) -> DevicePluginConfig:
    """The parsed device-plugin config; raises ``SharingConfigError`` (a ``DesiredStateError``) naming the field."""
    return parse_sharing_desired(sharing)


@cache
def _pci_device_id(model: str) -> str | None:
    """``0x20B010DE`` for a catalog model (aliases carry their own id), None when the catalog does not know it."""
    try:
        product = load_catalog().product(model)
    except KeyError:
        return None
    return f"0x{product.pci_device_id:08X}" if product.pci_device_id is not None else None


def _mig_capable(model: str) -> bool | None:
    try:
        return load_catalog().product(model).mig_capable
    except KeyError:
        return None


@cache
def _fits(model: str, profiles: tuple[str, ...]) -> bool:
    """Whether these GPU-instance profiles can all exist on one empty GPU of ``model`` (exhaustive search)."""

    def place(layout: Layout, rest: tuple[str, ...]) -> bool:
        if not rest:
            return True
        return any(
            place(add(layout, start, size, rest[0]), rest[1:])
            for start, size in free_placements(model, layout, rest[0])
        )

    geom = geometry(model)
    if geom is None:
        return True
    # Largest first: the search fails fast on what cannot fit.
    ordered = sorted(profiles, key=lambda name: -(p.slices if (p := geom.profile(name)) else 0))
    return place((), tuple(ordered))


def _entry_for(entries: Sequence[MigConfigEntry], gpu: GpuFacts) -> tuple[int, MigConfigEntry] | None:
    pci = _pci_device_id(gpu.model)
    for position, entry in enumerate(entries):
        if entry.devices != "all" and gpu.index not in entry.devices:
            continue
        if entry.device_filter is not None and (pci is None or pci not in entry.device_filter):
            continue
        return position, entry
    return None


def _gpu_problem(selected: str, position: int, entry: MigConfigEntry, gpu: GpuFacts) -> tuple[str, str | None] | None:
    """(message, profile) for the first thing on ``gpu`` that ``entry`` cannot do, or None."""
    where = (
        f"config {selected!r} entry {position + 1} ({entry.describe()}): host {gpu.host} GPU {gpu.index} ({gpu.model})"
    )
    if not entry.mig_enabled:
        return None
    if _mig_capable(gpu.model) is False:
        return f"{where}: GPU is not MIG capable, cannot set mig-enabled: true", None
    geom = geometry(gpu.model)
    if geom is None:
        return None  # not in the catalog: the agent checks against NVML
    offered = ", ".join(sorted(geom.profiles, key=lambda n: (geom.profiles[n].slices, geom.profiles[n].memory_mib, n)))
    wanted: list[str] = []
    for name, count in entry.mig_devices.items():
        if count == 0:
            continue
        if is_compute_instance_profile(name):
            return (
                f"{where}: profile {name!r}: compute-instance profiles are not supported; use GPU-instance profiles",
                name,
            )
        profile = geom.profile(name)
        if profile is None:
            return f"{where}: profile {name!r} does not exist on this GPU (it offers {offered})", name
        if count > profile.max_instances:
            return f"{where}: profile {name!r}: {count} instances requested, at most {profile.max_instances} fit", name
        wanted.extend([name] * count)
    if not _fits(geom.model, tuple(sorted(wanted))):
        summary = ", ".join(f"{n} x {c}" for n, c in entry.mig_devices.items() if c)
        return f"{where}: profiles {summary} do not fit together on one GPU", None
    return None


def check_layout_fits(config: MigPartedConfig, selected: str, gpus: Iterable[GpuFacts]) -> None:
    """Raise ``MigConfigError`` for the first GPU that the selected config cannot be applied to.

    Only the selected config is checked: a mig-parted file usually holds configs for other GPU models too.
    """
    entries = config.select(selected)
    for gpu in gpus:
        found = _entry_for(entries, gpu)
        if found is None:
            continue
        position, entry = found
        problem = _gpu_problem(selected, position, entry, gpu)
        if problem is not None:
            message, profile = problem
            loc: tuple[int | str, ...] = ("config", "mig-configs", selected, position, "mig-devices")
            raise MigConfigError(f"{config.source}: {message}", loc=(*loc, profile) if profile else loc)
