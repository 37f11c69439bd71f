"""Nova discovery: every compute node a host, its devices from Placement (``NovaBackend.sync``).

A nested pGPU provider with ``VGPU`` inventory is a device offering vGPU slices (type and framebuffer from the
catalog; the number of instances is Placement's; a MIG-backed type on as many GPU instances), a PCI GPU resource
class gives whole-GPU devices (not Cyborg's: providers with ``OWNER_CYBORG`` belong to the ``cyborg`` kind). A hypervisor
that is down or disabled is unreachable. Host aggregates and availability zones become the hosts' topology labels
(``controller.backends.openstack.topology``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.backends.nova.config import NovaConfig
from controller.backends.openstack.common import HYPERVISOR_LABEL
from controller.backends.openstack.hosts import HostDoc, base_labels, device_doc
from controller.backends.openstack.topology import TOPOLOGY_LABELS, aggregate_groupings, host_topology
from drivers.gpus.catalog import Product
from drivers.openstack import (
    HostAggregate,
    PlacementView,
    ResourceProvider,
    gpu_instance_layout,
    product_for_label,
    product_for_name,
    vgpu_type_for,
    vgpu_type_from_traits,
)
from drivers.openstack.cyborg import OWNER_TRAIT as OWNER_CYBORG
from drivers.openstack.nova import is_gpu_resource_class


def _vgpu_offer(
    config: NovaConfig, product: Product, capacity: int, traits: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """The vGPU type a pGPU offers: the provider's ``CUSTOM_VGPU_<TYPE>`` trait, else configured, else the catalog's
    time-sliced type with Placement's instance count, else one derived from the framebuffer split. A MIG-backed
    type's offer carries the GPU instances its vGPUs sit on (``drivers.openstack.gpus.gpu_instance_layout``)."""
    found = vgpu_type_from_traits(traits, product)
    source = "trait"
    configured = next((t for m, t in config.vgpu_types.items() if _same(m, product)), None)
    if found is None and configured:
        found, source = vgpu_type_for(configured, product), "config"
        if found is None:
            fb = product.memory_mib // max(capacity, 1)
            return {"name": configured, "framebuffer_mib": fb, "max_instances": capacity}, "config"
    if found is None:
        exact = [t for t in product.vgpu_types if t.max_instances == capacity and not t.mig_backed]
        chosen = min(exact, key=lambda t: t.framebuffer_mib) if exact else None
        found, source = ((product, chosen) if chosen else None), "catalog"
    if found is not None:
        board, vtype = found
        offer: dict[str, Any] = {
            "name": vtype.name,
            "framebuffer_mib": vtype.framebuffer_mib,
            "max_instances": capacity,
        }
        if vtype.mig_profile is not None:
            instances = gpu_instance_layout(board, vtype, min(capacity, vtype.max_instances))
            offer.update(max_instances=len(instances), mig_profile=vtype.mig_profile, gpu_instances=instances)
        return offer, source
    fb_gib = max(product.memory_mib // max(capacity, 1) // 1024, 1)
    name = f"{product.model}-{fb_gib}C"
    return {"name": name, "framebuffer_mib": fb_gib * 1024, "max_instances": capacity}, "derived"


def _same(model: str, product: Product) -> bool:
    p = product_for_name(model)
    return p is not None and p.model == product.model


def _tree_product(view: PlacementView, p: ResourceProvider) -> Product | None:
    for trait in (*p.traits, *view.by_uuid(p.root_uuid).traits):
        found = product_for_label(trait)
        if found is not None:
            return found
    return None


def nova_docs(
    config: NovaConfig,
    view: PlacementView,
    hypervisors: dict[str, bool],
    aggregates: Iterable[HostAggregate] = (),
    service_hosts: Mapping[str, str] | None = None,
) -> tuple[list[HostDoc], list[str]]:
    """``hypervisors``: hypervisor hostname -> up and enabled; ``aggregates`` (``os-aggregates``) give each host's
    AZ, network-node and aggregate labels (controller.backends.openstack.topology); ``service_hosts``: hypervisor
    hostname -> its compute service host (default: the same name)."""
    services = dict(service_hosts or {name: name for name in hypervisors})
    topology = host_topology(aggregate_groupings(aggregates, services), config.topology_layers)
    alias_of_rc = {rc: alias for alias, rc in config.pci_alias_resource_classes.items()}
    docs: list[HostDoc] = []
    skipped: list[str] = [f"topology: {w}" for w in topology.warnings]
    roots = {r.name: r for r in view.roots()}
    for name, up in sorted(hypervisors.items()):
        root = roots.get(name)
        if root is None:
            skipped.append(f"{name}: no resource provider in Placement")
            continue
        devices: list[dict[str, Any]] = []
        for p in sorted(view.tree(root.uuid), key=lambda p: p.name):
            for rc, inv in sorted(p.inventories.items()):
                if not is_gpu_resource_class(rc) or inv.capacity <= 0 or OWNER_CYBORG in p.traits:
                    continue  # Cyborg's GPUs (PGPU providers it owns) are the cyborg kind's
                if rc == "VGPU":
                    product = _tree_product(view, p)
                    if product is None:
                        skipped.append(f"{p.name}: VGPU provider without a GPU model trait (CUSTOM_GPU_<MODEL>)")
                        continue
                    offer, source = _vgpu_offer(config, product, inv.capacity, (*p.traits,))
                    devices.append(
                        device_doc(
                            f"nova-{p.uuid}",
                            len(devices),
                            product,
                            product.model,
                            {
                                "source": "placement",
                                "provider": p.uuid,
                                "provider_name": p.name,
                                "resource_class": rc,
                                "vgpu": {
                                    "supported": [offer],
                                    "type_source": source,
                                    "gpu_instances": offer.get("gpu_instances", []),
                                },
                            },
                        )
                    )
                    continue
                alias = alias_of_rc.get(rc)
                product = None
                if alias and alias in config.pci_alias_models:
                    product = product_for_name(config.pci_alias_models[alias])
                product = product or product_for_label(rc) or (_tree_product(view, p) if rc == "PGPU" else None)
                if product is None:
                    skipped.append(f"{p.name}: {rc} names no GPU model the catalog knows")
                    continue
                for i in range(inv.capacity):
                    devices.append(
                        device_doc(
                            f"nova-{p.uuid}-{i}",
                            len(devices),
                            product,
                            product.model,
                            {"source": "placement", "provider": p.uuid, "provider_name": p.name, "resource_class": rc},
                        )
                    )
        if not devices:
            continue
        labels = {**base_labels(config, "nova"), HYPERVISOR_LABEL: name, **topology.labels.get(name, {})}
        docs.append(HostDoc(name, up, labels, devices, TOPOLOGY_LABELS))
    return docs, skipped
