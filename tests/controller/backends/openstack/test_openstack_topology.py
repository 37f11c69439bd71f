"""OpenStack groupings as gang domains: Nova aggregates (AZ, network-node layer from metadata or config, the tightest
aggregate) and Ironic conductor groups become host labels, and those labels drive placement's gangs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.backends.contract import Capabilities
from controller.backends.ironic.config import IronicConfig
from controller.backends.ironic.discovery import ironic_docs
from controller.backends.nova.config import NovaConfig
from controller.backends.nova.discovery import nova_docs
from controller.backends.openstack.topology import (
    AGGREGATE_LABEL,
    LAYER_LABELS,
    LAYER_METADATA_KEY,
    Grouping,
    host_topology,
)
from controller.leases.fleet import to_placement_host
from controller.placement import Decision, Engine, Refusal
from drivers.openstack import (
    DiscoveredHost,
    GpuDevice,
    HostAggregate,
    PlacementView,
    ResourceProvider,
    host_from_node,
)

AZ = "gpufabric.dev/az"
AUTH = {"method": "none", "endpoints": {"compute": "http://nova.test", "placement": "http://placement.test"}}


def _nova(**kw: Any) -> NovaConfig:
    return NovaConfig.model_validate(
        {"auth": AUTH, "controller_url": "https://gf.test", "image": "img", "az": "fallback-az", **kw}
    )


def _view(*hosts: str) -> PlacementView:
    providers = []
    for h in hosts:
        providers.append(ResourceProvider(uuid=f"u-{h}", name=h, root_uuid=f"u-{h}"))
        providers.append(
            ResourceProvider(
                uuid=f"u-{h}-pgpu",
                name=f"{h}_pci_0000_81_00_0",
                parent_uuid=f"u-{h}",
                root_uuid=f"u-{h}",
                inventories={"VGPU": {"total": 4, "max_unit": 4}},  # type: ignore[dict-item]
                traits=["CUSTOM_GPU_A100"],
            )
        )
    return PlacementView(providers=providers)


def test_aggregates_give_az_layers_and_the_tightest_aggregate() -> None:
    aggs = [
        HostAggregate("az1-hosts", ("svc-a", "svc-b", "svc-c"), "az1", {}),
        HostAggregate("rack-7", ("svc-a", "svc-b"), None, {LAYER_METADATA_KEY: "3"}),
        HostAggregate("row-2", ("svc-a", "svc-b", "svc-c"), None, {LAYER_METADATA_KEY: "2"}),
        HostAggregate("odd", ("svc-c",), None, {LAYER_METADATA_KEY: "leaf"}),
    ]
    # Hypervisor names differ from the compute service hosts the aggregates list.
    services = {"hv-a": "svc-a", "hv-b": "svc-b", "hv-c": "svc-c", "hv-d": "svc-d"}
    docs, skipped = nova_docs(
        _nova(), _view("hv-a", "hv-b", "hv-c", "hv-d"), dict.fromkeys(services, True), aggs, services
    )
    labels = {d.name: d.labels for d in docs}
    assert labels["hv-a"][AZ] == "az1" and labels["hv-d"][AZ] == "fallback-az"  # outside every AZ aggregate
    assert labels["hv-a"][LAYER_LABELS[3]] == "rack-7" and labels["hv-a"][LAYER_LABELS[2]] == "row-2"
    assert LAYER_LABELS[3] not in labels["hv-c"] and labels["hv-c"][LAYER_LABELS[2]] == "row-2"
    assert labels["hv-a"][AGGREGATE_LABEL] == "rack-7"  # fewest hosts
    assert labels["hv-c"][AGGREGATE_LABEL] == "odd"
    assert AGGREGATE_LABEL not in labels["hv-d"]
    assert any("odd: metadata gpufabric:network_node_layer='leaf' is not 1, 2 or 3" in s for s in skipped)
    assert all(LAYER_LABELS[3] in d.owned_labels and AZ in d.owned_labels for d in docs)


def test_config_layers_win_over_metadata_and_conflicts_are_reported() -> None:
    groups = [
        Grouping("leaf-1", frozenset({"h1", "h2"}), metadata={LAYER_METADATA_KEY: "2"}),
        Grouping("leaf-2", frozenset({"h2"})),
    ]
    topo = host_topology(groups, {"leaf-1": 3, "leaf-2": 3})
    assert topo.labels["h1"][LAYER_LABELS[3]] == "leaf-1" and LAYER_LABELS[2] not in topo.labels["h1"]
    assert topo.labels["h2"][LAYER_LABELS[3]] == "leaf-1"
    assert topo.warnings == ["h2: in aggregates leaf-1 and leaf-2, both network nodes at layer 3; leaf-1 is used"]


def test_topology_layers_setting_is_validated() -> None:
    with pytest.raises(ValidationError) as err:
        _nova(topology_layers={"rack-7": 4})
    assert "topology_layers.rack-7" in str(err.value)
    with pytest.raises(ValidationError):
        _nova(topology_layers={"": 3})


def test_ironic_conductor_groups_are_aggregates_and_map_to_layers() -> None:
    def node(name: str, group: str | None) -> DiscoveredHost:
        return DiscoveredHost(
            node_id=f"id-{name}",
            name=name,
            model="H100-80GB",
            devices=[GpuDevice(index=0, model="H100-80GB", source="capabilities")],
            provision_state="available",
            conductor_group=group,
        )

    config = IronicConfig.model_validate(
        {"auth": AUTH, "controller_url": "https://gf.test", "image_source": "img", "topology_layers": {"pod-a": 2}}
    )
    # Ironic's API field (API 1.46); the default group "" is no group.
    read = host_from_node({"id": "a", "name": "n1", "conductor_group": "pod-a", "traits": ["CUSTOM_GPU_H100"]})
    assert read.conductor_group == "pod-a"
    assert host_from_node({"id": "b", "conductor_group": "", "traits": ["CUSTOM_GPU_H100"]}).conductor_group is None
    docs, _ = ironic_docs(config, [node("n1", "pod-a"), node("n2", "pod-a"), node("n3", None)], set())
    labels = {d.name: d.labels for d in docs}
    assert labels["n1"][AGGREGATE_LABEL] == "pod-a" and labels["n1"][LAYER_LABELS[2]] == "pod-a"
    assert AGGREGATE_LABEL not in labels["n3"]


class _Row:
    backend = None
    pool = None
    status = "ready"
    admin_state = "active"
    devices: list = []

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.hostname, self.labels = name, labels


def test_aggregate_gangs_and_the_nearest_fit() -> None:
    """Three hosts in rack-7, two in rack-8, all five in az1: a 3-node gang fits rack-7, 4 nodes only the AZ."""
    from tests.support.placement_fleet import gpu_host

    hosts = [
        gpu_host(f"h{i}", backend="nova-1", kind="nova", az="az1", aggregate=rack)
        for i, rack in enumerate(["rack-7"] * 3 + ["rack-8"] * 2)
    ]
    e = Engine(hosts)
    gang = {"slices": [{"kind": "gpu", "count": 8}], "topology": "same-aggregate"}
    d = e.decide({**gang, "nodes": 3}, "t")
    assert isinstance(d, Decision) and d.domain == "rack-7"
    r = e.decide({**gang, "nodes": 4}, "t")
    assert isinstance(r, Refusal)
    why = next(c for c in r.funnel.filters if c.name == "topology").examples[0]
    assert why == (
        "no host aggregate of one backend has 4 fitting hosts; the best, nova-1/rack-7, has 3; "
        "in one AZ it fits: nova-1/az1 has 5"
    )
    host = to_placement_host(
        _Row("x", {AGGREGATE_LABEL: "rack-9"}),  # type: ignore[arg-type]
        lambda _kind: Capabilities(access="CUDA_VISIBLE_DEVICES on the host"),
    )
    assert host.domain("same-aggregate") == "static/rack-9"
