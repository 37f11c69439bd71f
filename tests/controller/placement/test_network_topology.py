"""Gangs under one network node of the instance topology (layer 3: the node directly above the hosts, layer 1: the
top of the network), and refusals that name the layer that could not be met and the nearest looser fit."""

from __future__ import annotations

from controller.backends.contract import Capabilities
from controller.leases.fleet import to_placement_host
from controller.placement import Decision, Engine, Refusal
from tests.support.placement_fleet import gpu_host

GANG = {"slices": [{"kind": "gpu", "count": 8}]}


def _spine(backend: str = "eks-train") -> list:
    """One spine (layer 1), two blocks (layer 2), leaves (layer 3): leaf-a0 holds 3 hosts, leaf-a1 2, leaf-b0 2."""
    where = [("a", "a0")] * 3 + [("a", "a1")] * 2 + [("b", "b0")] * 2
    return [
        gpu_host(f"{backend}-{i}", backend=backend, kind="eks", network_nodes=("spine", f"block-{blk}", f"leaf-{leaf}"))
        for i, (blk, leaf) in enumerate(where)
    ]


def _topo_reason(r: Refusal) -> str:
    topo = next(c for c in r.funnel.filters if c.name == "topology")
    assert topo.examples, r.funnel
    return topo.examples[0]


def test_a_gang_stays_under_one_leaf() -> None:
    e = Engine(_spine())
    d = e.decide({**GANG, "nodes": 3, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(d, Decision)
    assert d.domain == "leaf-a0" and sorted(d.host_ids) == ["eks-train-0", "eks-train-1", "eks-train-2"]
    # Two nodes: the tightest leaf that holds them is preferred (keep leaf-a0's three for a 3-node gang).
    d2 = e.decide({**GANG, "nodes": 2, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(d2, Decision) and d2.domain in ("leaf-a1", "leaf-b0")


def test_a_layer_that_cannot_be_met_is_named_with_the_nearest_looser_fit() -> None:
    e = Engine(_spine())
    r = e.decide({**GANG, "nodes": 4, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(r, Refusal)
    why = _topo_reason(r)
    assert "no network node at layer 3 of one backend has 4 fitting hosts; the best, eks-train/leaf-a0, has 3" in why
    assert "under one network node at layer 2 it fits: eks-train/block-a has 5" in why
    # Layer 2 holds 5; six need the spine.
    r6 = e.decide({**GANG, "nodes": 6, "topology": "same-network-node-layer-2"}, "t")
    assert isinstance(r6, Refusal)
    assert "under one network node at layer 1 it fits: eks-train/spine has 7" in _topo_reason(r6)
    d = e.decide({**GANG, "nodes": 7, "topology": "same-network-node-layer-1"}, "t")
    assert isinstance(d, Decision) and d.domain == "spine" and len(set(d.host_ids)) == 7
    # Nothing holds eight: no looser layer to suggest.
    r8 = e.decide({**GANG, "nodes": 8, "topology": "same-network-node-layer-1"}, "t")
    assert isinstance(r8, Refusal) and "8 needed" in _topo_reason(r8)


def test_busy_hosts_do_not_count_towards_a_layer() -> None:
    e = Engine(_spine())
    taken = e.decide({**GANG, "nodes": 3, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(taken, Decision)
    e.claim(taken)
    r = e.decide({**GANG, "nodes": 3, "topology": "same-network-node-layer-2"}, "t")
    assert isinstance(r, Refusal)  # block-a has 2 free hosts left, block-b 2
    assert "the best, eks-train/block-a, has 2" in _topo_reason(r) or "the best, eks-train/block-b, has 2" in (
        _topo_reason(r)
    )
    assert "layer 1 it fits: eks-train/spine has 4" in _topo_reason(r)


def test_network_nodes_of_two_backends_are_different_domains() -> None:
    e = Engine(_spine("eks-a")[:2] + _spine("eks-b")[:2])  # both name their leaf "leaf-a0"
    r = e.decide({**GANG, "nodes": 3, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(r, Refusal)
    assert "has 2" in _topo_reason(r)


def test_hosts_without_an_instance_topology_are_refused_with_what_to_record() -> None:
    e = Engine([gpu_host(f"plain-{i}") for i in range(3)])
    r = e.decide({**GANG, "nodes": 2, "topology": "same-network-node-layer-3"}, "t")
    assert isinstance(r, Refusal)
    why = _topo_reason(r)
    assert "no fitting host has a network node at layer 3 recorded" in why
    assert "topology.k8s.aws/network-node-layer-N" in why


def test_store_labels_become_network_nodes() -> None:
    """EKS nodes carry AWS's labels; hosts of other backends gpufabric's own (layer 1 first)."""

    class Row:
        hostname = "n1"
        backend = None
        pool = None
        status = "ready"
        admin_state = "active"
        health = "healthy"
        devices: list = []
        labels = {
            "topology.k8s.aws/network-node-layer-1": "nn-top",
            "topology.k8s.aws/network-node-layer-2": "nn-mid",
            "gpufabric.dev/network-node-layer-3": "nn-leaf",
        }

    host = to_placement_host(Row(), lambda _kind: Capabilities(access="CUDA_VISIBLE_DEVICES on the host"))  # type: ignore[arg-type]
    assert host.network_nodes == ("nn-top", "nn-mid", "nn-leaf")
    assert host.domain("same-network-node-layer-3") == "static/nn-leaf"
    assert host.domain("same-network-node-layer-1") == "static/nn-top"
