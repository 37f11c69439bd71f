"""OpenStack host groupings as placement's gang domains: Nova host aggregates and availability zones, Ironic
conductor groups.

Every grouping a host belongs to may make it part of three kinds of domain (docs/openstack.md, "Topology"):

- **AZ** (``same-az``): a Nova aggregate's ``availability_zone`` is its hosts' AZ (Nova keeps a host in one AZ).
  A host in no AZ aggregate is in Nova's default zone and keeps the backend's ``az`` setting (or none).
- **network node at layer N** (``same-network-node-layer-N``): an aggregate whose metadata sets
  :data:`LAYER_METADATA_KEY` (``gpufabric:network_node_layer``) to ``1``, ``2`` or ``3``, or whose name the backend's ``topology_layers`` maps to a
  layer (the config wins), is a network node at that layer: its hosts get ``gpufabric.dev/network-node-layer-N =
  <aggregate>``. An Ironic conductor group is mapped the same way by ``topology_layers``.
- **aggregate** (``same-aggregate``): the host's tightest grouping, the aggregate with the fewest hosts it belongs to
  (ties: the first by name); on Ironic, its conductor group.

The sync owns these labels on its hosts (:data:`TOPOLOGY_LABELS`): a host that leaves an aggregate loses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controller.backends.openstack.common import AZ_LABEL
from drivers.openstack import HostAggregate

AGGREGATE_LABEL = "gpufabric.dev/aggregate"
# Nova metadata keys allow only [a-zA-Z0-9-_:. ] (no "/"), so the key follows the flavor hints (gpufabric:gpu_model).
LAYER_METADATA_KEY = "gpufabric:network_node_layer"
LAYERS = (1, 2, 3)
LAYER_LABELS = {n: f"gpufabric.dev/network-node-layer-{n}" for n in LAYERS}
TOPOLOGY_LABELS = frozenset({AZ_LABEL, AGGREGATE_LABEL, *LAYER_LABELS.values()})


@dataclass(frozen=True)
class Grouping:
    """A named set of hosts: a Nova aggregate (with its AZ and metadata) or an Ironic conductor group."""

    name: str
    hosts: frozenset[str]
    availability_zone: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class HostTopology:
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> topology labels
    warnings: list[str] = field(default_factory=list)


def layer_of(group: Grouping, layers: Mapping[str, int], warnings: list[str]) -> int | None:
    """The network layer a grouping stands for: the config's ``topology_layers``, else its metadata; None if
    neither says (a metadata value that is not 1, 2 or 3 is reported and ignored)."""
    if group.name in layers:
        return layers[group.name]
    raw = group.metadata.get(LAYER_METADATA_KEY)
    if raw is None:
        return None
    value = str(raw).strip()
    if value in {str(n) for n in LAYERS}:
        return int(value)
    warnings.append(f"aggregate {group.name}: metadata {LAYER_METADATA_KEY}={raw!r} is not 1, 2 or 3; ignored")
    return None


def host_topology(groups: Iterable[Grouping], layers: Mapping[str, int]) -> HostTopology:
    """The topology labels of every host the groupings name (hosts in no grouping get none)."""
    result = HostTopology()
    ordered = sorted(groups, key=lambda g: g.name)
    for group in ordered:
        layer = layer_of(group, layers, result.warnings)
        for host in sorted(group.hosts):
            labels = result.labels.setdefault(host, {})
            if group.availability_zone:
                labels.setdefault(AZ_LABEL, group.availability_zone)
            if layer is not None:
                key = LAYER_LABELS[layer]
                if key in labels and labels[key] != group.name:
                    result.warnings.append(
                        f"{host}: in aggregates {labels[key]} and {group.name}, both network nodes at layer {layer}; "
                        f"{labels[key]} is used"
                    )
                labels.setdefault(key, group.name)
    for group in sorted(ordered, key=lambda g: (len(g.hosts), g.name)):
        for host in group.hosts:
            result.labels.setdefault(host, {}).setdefault(AGGREGATE_LABEL, group.name)
    return result


def aggregate_groupings(aggregates: Iterable[HostAggregate], service_hosts: Mapping[str, str]) -> list[Grouping]:
    """The aggregates as groupings of hypervisor names (hosts are named after their hypervisor, aggregates list
    compute service hosts: one service host may run several hypervisors, e.g. Ironic's)."""
    by_service: dict[str, list[str]] = {}
    for hypervisor, service in service_hosts.items():
        by_service.setdefault(service, []).append(hypervisor)
    return [
        Grouping(
            a.name,
            frozenset(h for s in a.hosts for h in by_service.get(s, [s])),
            a.availability_zone,
            a.metadata,
        )
        for a in aggregates
    ]


def boot_zones(host_labels: Mapping[str, Mapping[str, object] | None], default_az: str | None) -> dict[str, str | None]:
    """The zone to boot each host's server in: its AZ as the last sync saw it (its AZ aggregate), else the backend's
    ``az`` (Nova refuses a boot whose requested zone is not the pinned host's)."""
    return {host: str((labels or {}).get(AZ_LABEL) or default_az or "") or None for host, labels in host_labels.items()}
