"""Node labels: GPU Feature Discovery compatible ``nvidia.com/*`` labels plus gpufabric's own.

The GFD names and value rules are kept exactly (see the catalog's ``formats.gfd_labels``) so that
node selectors written for GFD keep working when gpufabric labels the node instead:

- product: ``nvmlDeviceGetName`` with characters outside ``[A-Za-z0-9-_. ]`` dropped and
  whitespace runs turned into ``-``; ``-MIG-<profile>`` for MIG resources; ``-SHARED`` appended when
  the resource is replicated and not renamed;
- replicas: ``1`` unshared, ``N`` replicated, ``0`` for ``gpu.*`` when every GPU is MIG-enabled
  under the mixed strategy (GFD builds that labeler without the sharing config);
- single strategy: ``gpu.*`` describe the one MIG type, or ``<model>-MIG-INVALID`` with zeros
  when the layout is not uniform.

Not derivable from an Inventory and therefore left out unless passed in: ``gpu.machine``
(``machine``), ``gpu.mode`` (``gpu_mode``, see ``pci_gpu_mode``), per-MIG engine counts
(``mig_engines``), ``gfd.timestamp`` (``timestamp``).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from agent.health.rules import worst
from agent.sharing.config import GPU_RESOURCE, DevicePluginConfig, MigStrategy, ReplicatedResource
from drivers.contract.inventory import Gpu, Inventory, MigInstance

GpuMode = Literal["compute", "graphics", "unknown"]
NVIDIA = "nvidia.com"
GPUFABRIC = "gpufabric.io"


class MigEngines(BaseModel):
    """Per-MIG-profile engine counts (nvmlDeviceGetAttributes on a MIG device handle)."""

    copy_engines: int
    decoders: int
    encoders: int
    jpeg: int
    ofa: int


def sanitise_product(name: str) -> str:
    """GFD's product value: drop characters outside [A-Za-z0-9-_. ], whitespace runs -> '-'."""
    kept = re.sub(r"[^A-Za-z0-9\-_. ]", "", name)
    return re.sub(r"\s+", "-", kept.strip())


def family(compute_capability: str) -> str:
    """GFD's gpu.family from the CUDA compute capability."""
    try:
        major, minor = (int(part) for part in compute_capability.split(".")[:2])
    except ValueError:
        return "undefined"
    if major == 7:
        return "turing" if minor >= 5 else "volta"
    if major == 8:
        return "ada-lovelace" if minor >= 9 else "ampere"
    if major == 9:
        return "hopper"
    if major in (10, 12):
        return "blackwell"
    if major == 13:
        return "rubin"
    if major == 6:
        return "pascal"
    return "undefined"


def pci_gpu_mode(inventory: Inventory, sysfs_root: Path = Path("/sys")) -> GpuMode:
    """``compute`` for 3D controllers (PCI class 0x0302), ``graphics`` for VGA (0x0300), read from sysfs."""
    modes: set[GpuMode] = set()
    for gpu in inventory.gpus:
        bus = gpu.pci.bus_id.lower()
        # NVML writes an 8-digit domain; sysfs uses 4.
        if len(bus.split(":")[0]) == 8:
            bus = bus[4:]
        try:
            cls = (sysfs_root / "bus/pci/devices" / bus / "class").read_text().strip()
        except OSError:
            return "unknown"
        modes.add("compute" if cls.startswith("0x0302") else "graphics" if cls.startswith("0x0300") else "unknown")
    return modes.pop() if len(modes) == 1 else "unknown"


def _version_parts(version: str) -> list[str]:
    return [p for p in re.split(r"[.\-]", version) if p]


def _cuda_labels(inventory: Inventory) -> dict[str, str]:
    labels: dict[str, str] = {}
    driver = _version_parts(inventory.driver_version)
    if driver:
        major, minor, rev = ([*driver, "", "", ""])[:3]
        labels.update(
            {
                f"{NVIDIA}/cuda.driver-version.major": major,
                f"{NVIDIA}/cuda.driver-version.minor": minor,
                f"{NVIDIA}/cuda.driver-version.revision": rev,
                f"{NVIDIA}/cuda.driver-version.full": inventory.driver_version,
                # deprecated names GFD still writes
                f"{NVIDIA}/cuda.driver.major": major,
                f"{NVIDIA}/cuda.driver.minor": minor,
                f"{NVIDIA}/cuda.driver.rev": rev,
            }
        )
    cuda = _version_parts(inventory.cuda_driver_version)
    if cuda:
        major, minor = ([*cuda, "", ""])[:2]
        labels.update(
            {
                f"{NVIDIA}/cuda.runtime-version.major": major,
                f"{NVIDIA}/cuda.runtime-version.minor": minor,
                f"{NVIDIA}/cuda.runtime-version.full": f"{major}.{minor}",
                f"{NVIDIA}/cuda.runtime.major": major,
                f"{NVIDIA}/cuda.runtime.minor": minor,
            }
        )
    return labels


def _sharing(config: DevicePluginConfig | None, resource: str, gpus: list[Gpu]) -> tuple[int, str, bool]:
    """(replicas, sharing-strategy, renamed) for a resource name on these GPUs."""
    if config is None or config.strategy == "none" or config.replicated is None:
        return 1, "none", False
    replicated = config.replicated
    match: ReplicatedResource | None = next(
        (
            r
            for r in replicated.resources
            if r.name == resource and any(r.matches(index=g.index, uuid=g.uuid) for g in gpus)
        ),
        None,
    )
    if match is None:
        return 1, "none", False
    renamed = replicated.rename_by_default or match.rename is not None
    return match.replicas, config.strategy, renamed


def _product(base: str, replicas: int, renamed: bool) -> str:
    return f"{base}-SHARED" if replicas > 1 and not renamed else base


def _gi_slices(instance: MigInstance) -> int:
    match = re.match(r"^(?:\d+c\.)?(\d+)g\.", instance.profile)
    return int(match.group(1)) if match else instance.placement.size


def _ci_slices(instance: MigInstance) -> int:
    return instance.compute_instances[0].slices if instance.compute_instances else _gi_slices(instance)


def _mig_resource_labels(
    prefix: str,
    model: str,
    instance: MigInstance,
    count: int,
    replicas: int,
    strategy: str,
    renamed: bool,
    engines: MigEngines | None,
) -> dict[str, str]:
    labels = {
        f"{prefix}.count": str(count),
        f"{prefix}.product": _product(f"{model}-MIG-{instance.profile}", replicas, renamed),
        f"{prefix}.replicas": str(replicas),
        f"{prefix}.sharing-strategy": strategy,
        f"{prefix}.memory": str(instance.memory_mib),
        f"{prefix}.multiprocessors": str(instance.sm_count),
        f"{prefix}.slices.gi": str(_gi_slices(instance)),
        f"{prefix}.slices.ci": str(_ci_slices(instance)),
    }
    if engines is not None:
        labels.update(
            {
                f"{prefix}.engines.copy": str(engines.copy_engines),
                f"{prefix}.engines.decoder": str(engines.decoders),
                f"{prefix}.engines.encoder": str(engines.encoders),
                f"{prefix}.engines.jpeg": str(engines.jpeg),
                f"{prefix}.engines.ofa": str(engines.ofa),
            }
        )
    return labels


def _full_gpu_labels(gpus: list[Gpu], config: DevicePluginConfig | None, count: int, shared: bool) -> dict[str, str]:
    first = gpus[0]
    model = sanitise_product(first.name)
    if shared:
        replicas, strategy, renamed = _sharing(config, GPU_RESOURCE, gpus)
    else:
        replicas, strategy, renamed = 0, "none", False
    major, _, minor = first.compute_capability.partition(".")
    return {
        f"{NVIDIA}/gpu.count": str(count),
        f"{NVIDIA}/gpu.product": _product(model, replicas, renamed),
        f"{NVIDIA}/gpu.memory": str(first.memory_total_mib),
        f"{NVIDIA}/gpu.replicas": str(replicas),
        f"{NVIDIA}/gpu.sharing-strategy": strategy,
        f"{NVIDIA}/gpu.family": family(first.compute_capability),
        f"{NVIDIA}/gpu.compute.major": major,
        f"{NVIDIA}/gpu.compute.minor": minor or "0",
    }


def _mig_state(inventory: Inventory) -> str:
    states = {g.mig.state for g in inventory.gpus}
    if not states or states == {"unsupported"}:
        return "unsupported"
    if any(s.startswith("pending") for s in states):
        return "pending-reset"
    capable = states - {"unsupported"}
    if capable == {"enabled"}:
        return "enabled"
    if capable == {"disabled"}:
        return "disabled"
    return "mixed"


def node_labels(
    inventory: Inventory,
    *,
    sharing: DevicePluginConfig | None = None,
    mig_strategy: MigStrategy | None = None,
    mig_engines: dict[str, MigEngines] | None = None,
    machine: str | None = None,
    gpu_mode: GpuMode | None = None,
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """Labels for a node from its inventory.

    ``mig_strategy`` defaults to the sharing config's ``flags.migStrategy``, else ``none``.
    ``mig_engines`` maps a MIG profile name to its engine counts (GFD's engines.* labels).
    """
    strategy: MigStrategy = mig_strategy or (sharing.mig_strategy if sharing else None) or "none"
    engines = mig_engines or {}
    labels: dict[str, str] = {}
    if timestamp is not None:
        labels[f"{NVIDIA}/gfd.timestamp"] = str(int(timestamp.timestamp()))
    labels.update(_cuda_labels(inventory))
    if machine:
        labels[f"{NVIDIA}/gpu.machine"] = sanitise_product(machine)
    gpus = sorted(inventory.gpus, key=lambda g: g.index)
    labels[f"{NVIDIA}/mig.capable"] = str(any(g.mig.capable for g in gpus)).lower()
    labels[f"{NVIDIA}/mps.capable"] = str(sharing is not None and sharing.strategy == "mps").lower()
    labels[f"{NVIDIA}/gpu.mode"] = gpu_mode or "unknown"
    labels[f"{NVIDIA}/vgpu.present"] = "false"
    if strategy != "none":
        labels[f"{NVIDIA}/mig.strategy"] = strategy

    if gpus:
        mig_gpus = [g for g in gpus if g.mig.current]
        full_gpus = [g for g in gpus if not g.mig.current]
        model = sanitise_product(gpus[0].name)
        if strategy == "none":
            labels.update(_full_gpu_labels(gpus, sharing, len(gpus), shared=True))
            # with strategy none MIG-enabled GPUs are still advertised as whole GPUs
        elif strategy == "mixed":
            if full_gpus:
                labels.update(_full_gpu_labels(full_gpus, sharing, len(gpus), shared=True))
            else:
                labels.update(_full_gpu_labels(gpus, sharing, len(gpus), shared=False))
            by_profile: dict[str, list[tuple[Gpu, MigInstance]]] = {}
            for gpu in mig_gpus:
                for instance in gpu.mig_instances:
                    by_profile.setdefault(instance.profile, []).append((gpu, instance))
            for profile, members in sorted(by_profile.items()):
                resource = f"mig-{profile.replace('+', '.')}"
                replicas, share, renamed = _sharing(sharing, f"{NVIDIA}/{resource}", [g for g, _ in members])
                labels.update(
                    _mig_resource_labels(
                        f"{NVIDIA}/{resource}",
                        sanitise_product(members[0][0].name),
                        members[0][1],
                        len(members),
                        replicas,
                        share,
                        renamed,
                        engines.get(profile),
                    )
                )
        else:  # single
            profiles = Counter(i.profile for g in mig_gpus for i in g.mig_instances)
            valid = bool(mig_gpus) and not full_gpus and len(profiles) == 1 and all(g.mig_instances for g in mig_gpus)
            if not mig_gpus:
                labels.update(_full_gpu_labels(gpus, sharing, len(gpus), shared=True))
            elif not valid:
                labels.update(
                    {
                        f"{NVIDIA}/gpu.count": "0",
                        f"{NVIDIA}/gpu.product": f"{model}-MIG-INVALID",
                        f"{NVIDIA}/gpu.memory": "0",
                        f"{NVIDIA}/gpu.replicas": "0",
                        f"{NVIDIA}/gpu.sharing-strategy": "",
                    }
                )
            else:
                instance = mig_gpus[0].mig_instances[0]
                replicas, share, renamed = _sharing(sharing, GPU_RESOURCE, mig_gpus)
                labels.update(
                    _mig_resource_labels(
                        f"{NVIDIA}/gpu",
                        model,
                        instance,
                        sum(profiles.values()),
                        replicas,
                        share,
                        renamed,
                        engines.get(instance.profile),
                    )
                )
                major, _, minor = gpus[0].compute_capability.partition(".")
                labels[f"{NVIDIA}/gpu.family"] = family(gpus[0].compute_capability)
                labels[f"{NVIDIA}/gpu.compute.major"] = major
                labels[f"{NVIDIA}/gpu.compute.minor"] = minor or "0"

    labels.update(gpufabric_labels(inventory, sharing))
    return labels


def gpufabric_labels(inventory: Inventory, sharing: DevicePluginConfig | None = None) -> dict[str, str]:
    """gpufabric's own labels: worst GPU health, counts by state, MIG state, sharing strategy."""
    states = [g.health.state for g in inventory.gpus]
    counts = Counter(states)
    return {
        f"{GPUFABRIC}/health": worst(states) if states else "healthy",
        f"{GPUFABRIC}/health.healthy": str(counts.get("healthy", 0)),
        f"{GPUFABRIC}/health.degraded": str(counts.get("degraded", 0)),
        f"{GPUFABRIC}/health.unhealthy": str(counts.get("unhealthy", 0)),
        f"{GPUFABRIC}/health.quarantined": str(counts.get("quarantined", 0)),
        f"{GPUFABRIC}/mig.state": _mig_state(inventory),
        f"{GPUFABRIC}/sharing": sharing.strategy if sharing else "none",
        f"{GPUFABRIC}/vgpu.host": str(any(g.vgpu is not None and g.vgpu.supported for g in inventory.gpus)).lower(),
    }


def format_labels(labels: dict[str, str]) -> str:
    """GFD's output-file format: one ``key=value`` per line, sorted."""
    return "".join(f"{key}={value}\n" for key, value in sorted(labels.items()))
