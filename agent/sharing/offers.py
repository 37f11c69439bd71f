"""What tenants can get from a GPU once a sharing config is in force, as inventory slice offers.

A replicated resource replaces the plain one (the device plugin advertises N replicas *instead of*
the device), so the offers returned here are the complete list for a GPU: ``gpu`` x1 or ``mig`` x1
per instance when nothing is shared, ``timeslice`` x replicas or ``mps`` x replicas when it is.
"""

from __future__ import annotations

from agent.sharing.config import GPU_RESOURCE, DevicePluginConfig, MigStrategy, mig_resource_name
from drivers.contract.inventory import Gpu, Inventory, MigInstance, SliceOffer


def _mig_resource(instance: MigInstance, mig_strategy: MigStrategy | None) -> str:
    return GPU_RESOURCE if mig_strategy == "single" else mig_resource_name(instance.profile)


def mps_client_memory_mib(memory_mib: int, replicas: int, override_mib: int | None = None) -> int:
    """Per-client pinned device memory under MPS: an explicit limit, else an equal share."""
    return override_mib if override_mib is not None else memory_mib // replicas


def slice_offers(
    gpu: Gpu,
    config: DevicePluginConfig | None,
    *,
    mig_strategy: MigStrategy | None = None,
    mps_memory_limit_mib: int | None = None,
) -> list[SliceOffer]:
    """Offers for one GPU under ``config`` (None = no sharing).

    ``mig_strategy`` defaults to the config's ``flags.migStrategy``, else ``mixed`` (each MIG
    profile is its own resource). Time-sliced shares are not memory-isolated, so a ``timeslice``
    offer carries the whole device's memory; an ``mps`` offer carries its per-client limit.
    """
    strategy = config.strategy if config else "none"
    replicated = config.replicated if config else None
    mig_strategy = mig_strategy or (config.mig_strategy if config else None) or "mixed"
    offers: list[SliceOffer] = []

    if gpu.mig.current:
        for position, instance in enumerate(gpu.mig_instances):
            parent = instance.uuid or gpu.uuid
            resource = None
            if replicated is not None and strategy != "none":
                resource = next(
                    (
                        r
                        for r in replicated.resources
                        if r.name == _mig_resource(instance, mig_strategy)
                        and r.matches(index=gpu.index, uuid=parent, mig_index=position)
                    ),
                    None,
                )
            if resource is None:
                offers.append(
                    SliceOffer(
                        kind="mig",
                        count=1,
                        memory_mib=instance.memory_mib,
                        profile=instance.profile,
                        parent_uuid=parent,
                    )
                )
            elif strategy == "mps":
                offers.append(
                    SliceOffer(
                        kind="mps",
                        count=resource.replicas,
                        memory_mib=mps_client_memory_mib(instance.memory_mib, resource.replicas, mps_memory_limit_mib),
                        profile=instance.profile,
                        parent_uuid=parent,
                    )
                )
            else:
                offers.append(
                    SliceOffer(
                        kind="timeslice",
                        count=resource.replicas,
                        memory_mib=instance.memory_mib,
                        profile=instance.profile,
                        parent_uuid=parent,
                    )
                )
        return offers

    resource = None
    if replicated is not None and strategy != "none":
        resource = next(
            (r for r in replicated.resources if r.name == GPU_RESOURCE and r.matches(index=gpu.index, uuid=gpu.uuid)),
            None,
        )
    if resource is None:
        return [SliceOffer(kind="gpu", count=1, memory_mib=gpu.memory_total_mib, parent_uuid=gpu.uuid)]
    if strategy == "mps":
        limit = mps_client_memory_mib(gpu.memory_total_mib, resource.replicas, mps_memory_limit_mib)
        return [SliceOffer(kind="mps", count=resource.replicas, memory_mib=limit, parent_uuid=gpu.uuid)]
    return [
        SliceOffer(kind="timeslice", count=resource.replicas, memory_mib=gpu.memory_total_mib, parent_uuid=gpu.uuid)
    ]


def annotate_offers(
    inventory: Inventory,
    config: DevicePluginConfig | None,
    *,
    mig_strategy: MigStrategy | None = None,
    mps_memory_limit_mib: int | None = None,
) -> Inventory:
    """A copy of ``inventory`` whose GPUs carry the offers under ``config``."""
    result = inventory.model_copy(deep=True)
    for gpu in result.gpus:
        gpu.slices = slice_offers(gpu, config, mig_strategy=mig_strategy, mps_memory_limit_mib=mps_memory_limit_mib)
    return result
