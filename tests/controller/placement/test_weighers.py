from __future__ import annotations

from controller.placement import Decision, Engine, WeigherConfig
from tests.support.placement_fleet import gpu_host, shared_host


def host_for(e: Engine, body: dict) -> str:
    d = e.decide(body, "t")
    assert isinstance(d, Decision), d
    return d.host_ids[0]


def _fleet() -> Engine:
    e = Engine([gpu_host("a", n=8), gpu_host("b", n=8)])
    d = e.decide({"slices": [{"kind": "gpu", "count": 6}]}, "t")
    assert isinstance(d, Decision)
    e.claim(d)
    return e


def test_pack_fills_the_partly_used_host() -> None:
    e = _fleet()
    used = next(iter(e.claims.values())).host_ids[0]
    assert host_for(e, {"slices": [{"kind": "gpu"}]}) == used


def test_spread_goes_to_the_emptiest_host() -> None:
    e = _fleet()
    used = next(iter(e.claims.values())).host_ids[0]
    assert host_for(e, {"slices": [{"kind": "gpu"}], "policy": "spread"}) != used
    e2 = Engine([gpu_host("a", n=8), gpu_host("b", n=8)], weighers=WeigherConfig(default_policy="spread"))
    first = host_for(e2, {"slices": [{"kind": "gpu", "count": 2}]})
    d = e2.decide({"slices": [{"kind": "gpu", "count": 2}]}, "t")
    assert isinstance(d, Decision)
    e2.claim(e2.decide({"slices": [{"kind": "gpu", "count": 2}]}, "t"))  # type: ignore[arg-type]
    assert host_for(e2, {"slices": [{"kind": "gpu", "count": 2}]}) != first


def test_timeslice_pack_prefers_one_gpu_with_least_room() -> None:
    h = shared_host("l4", n=2, replicas=4)
    h.devices[0].share_claims = {"old": 3}
    e = Engine([h])
    d = e.decide({"slices": [{"kind": "timeslice"}]}, "t")
    assert isinstance(d, Decision) and d.allocations[0].device_uuid == "GPU-l4-0"
    d = e.decide({"slices": [{"kind": "timeslice", "count": 2}]}, "t")
    assert isinstance(d, Decision) and [a.device_uuid for a in d.allocations] == ["GPU-l4-1"]
    d = e.decide({"slices": [{"kind": "timeslice", "count": 5}]}, "t")
    assert isinstance(d, Decision) and sum(a.units for a in d.allocations) == 5


def test_cost_breaks_ties() -> None:
    e = Engine([gpu_host("dear", n=8, cost=3.0), gpu_host("cheap", n=8, cost=1.0)])
    assert host_for(e, {"slices": [{"kind": "gpu"}]}) == "cheap"


def test_region_preference_order() -> None:
    e = Engine([gpu_host("eu", n=8, region="eu", az="eu-a"), gpu_host("us", n=8, region="us", az="us-a")])
    assert host_for(e, {"slices": [{"kind": "gpu"}], "regions": ["us", "eu"]}) == "us"
    assert host_for(e, {"slices": [{"kind": "gpu"}], "regions": ["eu", "us"]}) == "eu"


def test_scores_are_reported_on_the_decision() -> None:
    e = _fleet()
    d = e.decide({"slices": [{"kind": "gpu"}]}, "t")
    assert isinstance(d, Decision)
    s = d.summary()
    assert set(s["nodes"][0]["scores"]) >= {"pack", "cost", "backend_preference", "mig_fragmentation", "total"}
