"""Multi-node and topology requests are all-or-nothing."""

from __future__ import annotations

from controller.placement import ClaimConflict, Decision, Engine, Refusal
from tests.unit.placement.fleet import gpu_host


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
    assert "the best, pg1, has 3" in topo.examples[0]
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
