"""Gang domains: which hosts a topology groups together (the attribute of ``controller.placement.index.DOMAINS``
each topology reads), and why a gang's hosts cannot be found in one of them (with the nearest looser network layer
that could hold it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from controller.placement.request import PlacementRequest

DOMAIN_ATTR = {
    "same-network-node-layer-3": "network_node_3",
    "same-network-node-layer-2": "network_node_2",
    "same-network-node-layer-1": "network_node_1",
    "same-placement-group": "placement_group",
    "same-aggregate": "aggregate",
    "same-az": "az",
    "same-region": "region",
    "any": "backend",
}
_DOMAIN_WORDS = {
    "network_node_3": "network node at layer 3",
    "network_node_2": "network node at layer 2",
    "network_node_1": "network node at layer 1",
    "placement_group": "placement group",
    "aggregate": "host aggregate",
}
# Looser domains that may hold a gang a tighter one cannot, tightest first: the nearest fit a refusal names.
_LOOSER = {"aggregate": (("same-az", "AZ"), ("same-region", "region"))}


def topology_reason(
    req: PlacementRequest, n_fitting: int, by_domain: Callable[[str], Counter[str | None]]
) -> str | None:
    """Why ``n_fitting`` hosts, each able to serve one node, cannot make the request (None if they can).

    ``by_domain(topology)`` counts them per value of a topology's domain (called only for gangs): the backend for
    ``any`` (a lease stays inside one backend), else ``<backend>/<network node | placement group | AZ |
    region>``. When several domains tie for the most fitting hosts, the message names the first by name. A
    network layer that cannot be met names the tightest looser layer that could, as the nearest fit.
    """
    if n_fitting < req.nodes:
        return f"{n_fitting} hosts fit, {req.nodes} needed"
    if req.nodes == 1:
        return None
    by = _best(by_domain(req.topology))
    if by and by[1] >= req.nodes:
        return None
    attr = DOMAIN_ATTR[req.topology]
    words = _DOMAIN_WORDS.get(attr, attr)
    if by is None:
        if attr.startswith("network_node_"):
            return (
                f"no fitting host has a {words} recorded (labels topology.k8s.aws/network-node-layer-N or "
                "gpufabric.dev/network-node-layer-N, from the instance topology)"
            )
        if attr == "aggregate":
            return (
                f"no fitting host has a {words} recorded (label gpufabric.dev/aggregate: the Nova aggregate or Ironic "
                "conductor group the OpenStack sync records)"
            )
        return f"no fitting host has a {words}"
    dom, n = by
    if attr == "backend":
        return (
            f"{n_fitting} hosts fit, but a lease stays inside one backend: none has {req.nodes} fitting hosts; "
            f"the best, {dom}, has {n}"
        )
    reason = f"no {words} of one backend has {req.nodes} fitting hosts; the best, {dom}, has {n}"
    if attr.startswith("network_node_"):
        for layer in range(int(attr[-1]) - 1, 0, -1):
            looser = _best(by_domain(f"same-network-node-layer-{layer}"))
            if looser is not None and looser[1] >= req.nodes:
                return f"{reason}; under one network node at layer {layer} it fits: {looser[0]} has {looser[1]}"
    for topology, name in _LOOSER.get(attr, ()):
        looser = _best(by_domain(topology))
        if looser is not None and looser[1] >= req.nodes:
            return f"{reason}; in one {name} it fits: {looser[0]} has {looser[1]}"
    return reason


def _best(counts: Counter[str | None]) -> tuple[str, int] | None:
    """The domain with the most fitting hosts (ties: the first by name); None if no host has the domain."""
    by = {dom: n for dom, n in counts.items() if dom is not None}
    if not by:
        return None
    return min(by.items(), key=lambda x: (-x[1], x[0]))
