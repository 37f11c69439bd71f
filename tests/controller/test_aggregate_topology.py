"""Gangs inside one OpenStack host aggregate, through the REST API, on static hosts labelled the way the OpenStack
syncs label theirs (``gpufabric.dev/aggregate``, ``gpufabric.dev/az``, ``gpufabric.dev/network-node-layer-N``):
placed inside one aggregate, and refused with the domain that could not be met and the nearest looser fit."""

from __future__ import annotations

from typing import Any

import httpx

from drivers.contract.protocol import RegisterRequest
from tests.support.controller import Controller
from tests.support.helpers import report, synthetic_inventory

GANG = {"slices": [{"kind": "gpu", "count": 2, "model": "H100"}]}
RACKS = {"gpu-0": "rack-7", "gpu-1": "rack-7", "gpu-2": "rack-7", "gpu-3": "rack-8", "gpu-4": "rack-8"}


def _register_labelled(boot: httpx.Client, name: str, labels: dict[str, str]) -> None:
    body = RegisterRequest(hostname=name, agent_version="test", labels=labels).model_dump(mode="json")
    registered = boot.post("/v1/agents/register", json=body)
    assert registered.status_code == 201, registered.text
    assert report(boot, registered.json()["credential"], synthetic_inventory(name, gpus=2), 1).status_code == 200


def _hosts(lease: dict[str, Any]) -> set[str]:
    return {a["host"] for a in lease["allocations"]}


def test_same_aggregate_gang_placed_and_refused_with_the_nearest_fit(controller: Controller) -> None:
    with controller.client(controller.bootstrap_token) as boot:
        for name, rack in RACKS.items():
            _register_labelled(
                boot,
                name,
                {
                    "gpufabric.dev/az": "az1",
                    "gpufabric.dev/aggregate": rack,
                    "gpufabric.dev/network-node-layer-3": rack,
                },
            )
    with controller.client(controller.tenant_token) as tenant:
        # Four nodes: no aggregate has them; the AZ does.
        refused = tenant.post("/v1/leases", json={**GANG, "nodes": 4, "topology": "same-aggregate"})
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert "4 nodes x (2 x gpu H100), same-aggregate" in body["detail"]
        assert body["type"] == "https://gpufabric.dev/problems/no-capacity"
        topology = next(f for f in body["filters"] if f["filter"] == "topology")
        assert topology["removed_hosts"] == 5
        assert topology["reasons"] == [
            "no host aggregate of one backend has 4 fitting hosts; the best, static/rack-7, has 3; "
            "in one AZ it fits: static/az1 has 5"
        ]
        # The racks are also layer-3 network nodes (an aggregate with metadata gpufabric:network_node_layer=3).
        leaf = tenant.post("/v1/leases", json={**GANG, "nodes": 4, "topology": "same-network-node-layer-3"})
        assert leaf.status_code == 409, leaf.text
        assert next(f for f in leaf.json()["filters"] if f["filter"] == "topology")["reasons"] == [
            "no network node at layer 3 of one backend has 4 fitting hosts; the best, static/rack-7, has 3"
        ]
        dry = tenant.post("/v1/placements:dry-run", json={**GANG, "nodes": 3, "topology": "same-aggregate"})
        assert dry.status_code == 200, dry.text

        placed = tenant.post("/v1/leases", json={**GANG, "nodes": 3, "topology": "same-aggregate"})
        assert placed.status_code == 201, placed.text
        lease = placed.json()
        assert lease["state"] == "ready"
        assert _hosts(lease) == {"gpu-0", "gpu-1", "gpu-2"}

        # rack-7 is taken: two more fit in rack-8.
        second = tenant.post("/v1/leases", json={**GANG, "nodes": 2, "topology": "same-aggregate"})
        assert second.status_code == 201, second.text
        assert _hosts(second.json()) == {"gpu-3", "gpu-4"}
