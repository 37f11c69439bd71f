"""Ironic discovery: every GPU node a host (``IronicBackend.sync``).

A GPU node (resource class prefix, ``CUSTOM_GPU_*`` trait, capabilities or inspected GPUs) is a host named after the
node, with one whole-GPU device per GPU (model and memory from the GPU catalog) and the labels region / az /
resource class / node UUID, and the topology labels of its conductor group (``controller.backends.openstack.topology``:
the group is the host's ``same-aggregate`` domain, and a network node where ``topology_layers`` maps it). Only ``available`` nodes out of maintenance are placeable; a node deployed for a live
gpufabric lease stays a (fully claimed) host; anything else is marked unreachable.
"""

from __future__ import annotations

from controller.backends.ironic.config import IronicConfig
from controller.backends.openstack.common import IRONIC_NODE_LABEL, IRONIC_STATE_LABEL, RESOURCE_CLASS_LABEL
from controller.backends.openstack.hosts import HostDoc, base_labels, device_doc
from controller.backends.openstack.topology import TOPOLOGY_LABELS, Grouping, host_topology
from drivers.openstack import DiscoveredHost, product_for_name


def ironic_docs(
    config: IronicConfig, nodes: list[DiscoveredHost], live_leases: set[str]
) -> tuple[list[HostDoc], list[str]]:
    groups: dict[str, set[str]] = {}
    for node in nodes:
        if node.conductor_group:
            groups.setdefault(node.conductor_group, set()).add(node.name)
    topology = host_topology(
        [Grouping(name, frozenset(hosts)) for name, hosts in groups.items()], config.topology_layers
    )
    docs: list[HostDoc] = []
    skipped: list[str] = [f"topology: {w}" for w in topology.warnings]
    for node in nodes:
        product = product_for_name(node.model) if node.model else None
        if not node.devices or product is None:
            skipped.append(f"{node.name}: GPU model unknown to the catalog ({node.model or 'none'})")
            continue
        ours = node.lease_id is not None and node.lease_id in live_leases
        state = (node.provision_state or "") + (" maintenance" if node.maintenance else "")
        labels = {
            **base_labels(config, "ironic"),
            IRONIC_NODE_LABEL: node.node_id,
            IRONIC_STATE_LABEL: state,
        }
        if node.resource_class:
            labels[RESOURCE_CLASS_LABEL] = node.resource_class
        labels.update(topology.labels.get(node.name, {}))
        devices = []
        for d in node.devices:
            p = product_for_name(d.model) if d.model else product
            devices.append(
                device_doc(
                    f"ironic-{node.node_id}-{d.index}",
                    d.index,
                    p,
                    d.model or node.model or "",
                    {"source": f"ironic:{d.source}", "node": node.node_id, "pci_address": d.pci_address},
                )
            )
        docs.append(HostDoc(node.name, node.available or ours, labels, devices, TOPOLOGY_LABELS))
    return docs, skipped
