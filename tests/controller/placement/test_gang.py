"""Multi-node and topology requests are all-or-nothing."""

from __future__ import annotations

from controller.placement import ClaimConflict, Decision, Engine, Refusal
from tests.support.placement_fleet import gpu_host


def _fleet() -> Engine:
    hosts = [gpu_host(f"pg1-{i}", n=8, pg="pg1", az="a") for i in range(3)]
    hosts += [gpu_host(f"pg2-{i}", n=8, pg="pg2", az="a") for i in range(2)]
    hosts += [gpu_host(f"pg3-{i}", n=8, pg="pg3", az="b") for i in range(2)]
    return Engine(hosts)


def test_same_placement_group_picks_one_group() -> None:
    e = _fleet()
    d = e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 3, "topology": "same-placement-group"}, "t")
    assert isinstance(d, Decision)
    assert d.domain == "pg1" and sorted(d.host_ids) == ["pg1-0", "pg1-1", "pg1-2"]
    assert len(d.allocations) == 24 and len({a.device_uuid for a in d.allocations}) == 24


def test_topology_prefers_the_tightest_domain() -> None:
    e = _fleet()
    d = e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 2, "topology": "same-placement-group"}, "t")
    assert isinstance(d, Decision) and d.domain in ("pg2", "pg3")  # keep pg1 (3 hosts) for a 3-node gang


def test_gang_refusal_leaves_no_partial_claim_and_explains_topology() -> None:
    e = _fleet()
    before = e.index.totals()
    r = e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 4, "topology": "same-placement-group"}, "t")
    assert isinstance(r, Refusal)
    topo = next(c for c in r.funnel.filters if c.name == "topology")
    assert topo.removed_hosts == 7
    assert "the best, static-1/pg1, has 3" in topo.examples[0]
    assert e.index.totals() == before and e.claims == {}


def test_same_az_and_any() -> None:
    e = _fleet()
    d = e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 5, "topology": "same-az"}, "t")
    assert isinstance(d, Decision) and d.domain == "a" and len(set(d.host_ids)) == 5
    assert isinstance(
        e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 6, "topology": "same-az"}, "t"), Refusal
    )
    d = e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 7, "topology": "any"}, "t")
    assert isinstance(d, Decision) and len(set(d.host_ids)) == 7
    assert isinstance(e.decide({"slices": [{"kind": "gpu", "count": 8}], "nodes": 8}, "t"), Refusal)


def test_claim_conflict_rolls_back_everything() -> None:
    e = _fleet()
    body = {"slices": [{"kind": "gpu", "count": 8}], "nodes": 3, "topology": "same-placement-group"}
    d1 = e.decide(body, "t")
    d2 = e.decide({"slices": [{"kind": "gpu"}], "azs": ["a"]}, "t")
    assert isinstance(d1, Decision) and isinstance(d2, Decision)
    # Take one GPU d1 needs, then d1's claim must fail as a whole.
    victim = d1.allocations[-1]
    e.index.hosts[victim.host_id].device(victim.device_uuid).claimed_by = "someone"  # type: ignore[union-attr]
    e.index.refresh(victim.host_id)
    before = e.index.totals()
    try:
        e.claim(d1)
    except ClaimConflict:
        pass
    else:  # pragma: no cover
        raise AssertionError("expected a conflict")
    assert e.index.totals() == before
    assert all(d.claimed_by in (None, "someone") for h in e.index.hosts.values() for d in h.devices)


def test_a_gang_never_spans_backends() -> None:
    """The split bug: with topology any, a 2-node lease was placed on an Ironic node and an EKS node (and with
    same-az, on two clouds that name an AZ alike). A lease stays inside one backend."""
    metal = gpu_host("metal-0", backend="metal", kind="ironic", az="r1a")
    eks = gpu_host("eks-0", backend="eks-train", kind="eks", az="r1a")
    for topology in ("any", "same-az", "same-region"):
        e = Engine([metal, eks])
        body = {"slices": [{"kind": "gpu", "count": 8}], "nodes": 2, "topology": topology}
        r = e.decide(body, "t")
        assert isinstance(r, Refusal), (topology, r)
        topo = next(c for c in r.funnel.filters if c.name == "topology")
        assert topo.removed_hosts == 2
        if topology == "any":
            assert "a lease stays inside one backend: none has 2 fitting hosts" in topo.examples[0]
        else:
            assert "of one backend has 2 fitting hosts; the best, eks-train/" in topo.examples[0]
        # A second EKS node: the gang goes to EKS, both nodes there, never the Ironic node.
        e.upsert_host(gpu_host("eks-1", backend="eks-train", kind="eks", az="r1a"))
        d = e.decide(body, "t")
        assert isinstance(d, Decision), (topology, d)
        assert sorted(d.host_ids) == ["eks-0", "eks-1"]
        assert d.domain == (None if topology == "any" else "r1a" if topology == "same-az" else "r1")


def test_an_az_filter_still_finds_hosts_of_every_backend() -> None:
    e = Engine(
        [gpu_host("metal-0", backend="metal", kind="ironic", az="r1b"), gpu_host("eks-0", backend="eks", az="r1a")]
    )
    d = e.decide({"slices": [{"kind": "gpu", "count": 8}], "azs": ["r1b"]}, "t")
    assert isinstance(d, Decision) and d.host_ids == ["metal-0"]
    d = e.decide(
        {"slices": [{"kind": "gpu", "count": 2}], "nodes": 2, "topology": "any", "backends": ["metal", "eks"]}, "t"
    )
    assert isinstance(d, Refusal)
