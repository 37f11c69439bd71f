"""Cyborg discovery: every compute node with Cyborg GPUs a host, one device per Cyborg deployable.

A GPU is a deployable of Cyborg whose resource provider (``rp_uuid``, made by cyborg-conductor under the compute
node's provider) has ``PGPU`` inventory and the ``OWNER_CYBORG`` trait; its model comes from a
``CUSTOM_GPU_<MODEL>`` trait (gpufabric's Cyborg driver sets it from the NVML name) or the provider's other traits.
A hypervisor that is down or disabled is unreachable. Host aggregates and availability zones become the hosts'
topology labels, as on the ``nova`` kind (``controller.backends.openstack.topology``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.backends.cyborg.config import CyborgConfig
from controller.backends.openstack.common import HYPERVISOR_LABEL
from controller.backends.openstack.hosts import HostDoc, base_labels, device_doc
from controller.backends.openstack.topology import TOPOLOGY_LABELS, aggregate_groupings, host_topology
from drivers.openstack import HostAggregate, PlacementView, product_for_label
from drivers.openstack.cyborg import OWNER_TRAIT, RESOURCE_CLASS, Deployable

DEPLOYABLE_PREFIX = "cyborg-"


def device_uuid(deployable: Deployable) -> str:
    return f"{DEPLOYABLE_PREFIX}{deployable.uuid}"


def cyborg_docs(
    config: CyborgConfig,
    view: PlacementView,
    hypervisors: dict[str, bool],
    deployables: list[Deployable],
    aggregates: Iterable[HostAggregate] = (),
    service_hosts: Mapping[str, str] | None = None,
) -> tuple[list[HostDoc], list[str]]:
    """``hypervisors``: hypervisor hostname -> up and enabled; ``aggregates`` and ``service_hosts`` (hypervisor ->
    compute service host) as for ``nova_docs``: they give each host's AZ, network-node and aggregate labels."""
    by_rp = {d.rp_uuid: d for d in deployables if d.rp_uuid}
    roots = {r.name: r for r in view.roots()}
    services = dict(service_hosts or {name: name for name in hypervisors})
    topology = host_topology(aggregate_groupings(aggregates, services), config.topology_layers)
    docs: list[HostDoc] = []
    skipped: list[str] = [f"topology: {w}" for w in topology.warnings]
    for name, up in sorted(hypervisors.items()):
        root = roots.get(name)
        if root is None:
            skipped.append(f"{name}: no resource provider in Placement")
            continue
        devices: list[dict[str, Any]] = []
        for p in sorted(view.tree(root.uuid), key=lambda p: p.name):
            inv = p.inventories.get(RESOURCE_CLASS)
            if inv is None or inv.capacity <= 0 or OWNER_TRAIT not in p.traits:
                continue
            deployable = by_rp.get(p.uuid)
            if deployable is None:
                skipped.append(f"{p.name}: a Cyborg PGPU provider with no Cyborg deployable")
                continue
            product = next((found for t in p.traits if (found := product_for_label(t)) is not None), None)
            if product is None:
                skipped.append(f"{p.name}: no GPU model trait the catalog knows ({', '.join(p.traits)})")
                continue
            devices.append(
                device_doc(
                    device_uuid(deployable),
                    len(devices),
                    product,
                    product.model,
                    {
                        "source": "cyborg",
                        "deployable": deployable.uuid,
                        "deployable_name": deployable.name,
                        "provider": p.uuid,
                        "provider_name": p.name,
                        "resource_class": RESOURCE_CLASS,
                        "traits": sorted(p.traits),
                    },
                )
            )
        if not devices:
            continue
        labels = {**base_labels(config, "cyborg"), HYPERVISOR_LABEL: name, **topology.labels.get(name, {})}
        docs.append(HostDoc(name, up, labels, devices, TOPOLOGY_LABELS))
    return docs, skipped
