"""Every filter, with the counts a refusal reports and the nearest fit."""

from __future__ import annotations

from typing import Any

import pytest

from controller.placement import Decision, Engine, PlacementError, Refusal
from tests.support.placement_fleet import gpu_host, mig_host, shared_host, vgpu_host


def refuse(engine: Engine, body: dict[str, Any], tenant: str = "t1") -> Refusal:
    r = engine.decide(body, tenant)
    assert isinstance(r, Refusal), r
    return r


def removed(r: Refusal) -> dict[str, tuple[int, int]]:
    return {
        c.name: (c.removed_hosts, c.removed_devices) for c in r.funnel.filters if c.removed_hosts or c.removed_devices
    }


def test_host_state_filter_counts_drained_quarantined_unreachable() -> None:
    hosts = [
        gpu_host("a", n=2, state="drained"),
        gpu_host("b", n=2, state="quarantined"),
        gpu_host("c", n=2, state="unreachable"),
    ]
    r = refuse(Engine(hosts), {"slices": [{"kind": "gpu"}]})
    assert removed(r) == {"host-state": (3, 6)}
    assert r.status == 409 and r.slug == "no-capacity"
    ex = next(c for c in r.funnel.filters if c.name == "host-state").examples
    assert "a: host is drained" in ex


def test_backend_region_az_validation_filters() -> None:
    hosts = [
        gpu_host("nova1", n=1, backend="nova-1", kind="nova"),
        gpu_host("eu", n=1, backend="eks-1", kind="eks", region="eu", az="eu-a"),
        gpu_host("us-b", n=1, backend="eks-1", kind="eks", region="us", az="us-b"),
        gpu_host("us-a", n=1, backend="eks-1", kind="eks", region="us", az="us-a", validation="failed"),
    ]
    r = refuse(
        Engine(hosts),
        {
            "slices": [{"kind": "gpu"}],
            "backends": ["eks"],
            "regions": ["us"],
            "azs": ["us-a"],
            "require_validated": True,
        },
    )
    assert removed(r) == {"backend": (1, 1), "region": (1, 1), "az": (1, 1), "validation": (1, 1)}
    # The nearest fit is the host that failed only one filter.
    assert r.funnel.nearest_fit is not None and r.funnel.nearest_fit.host_id == "us-a"
    assert any("failed" in m for m in r.funnel.nearest_fit.missing)


def test_backend_filter_accepts_id_or_kind_and_prefers_in_order() -> None:
    hosts = [gpu_host("s", n=1, backend="static-1", kind="static"), gpu_host("e", n=1, backend="eks-1", kind="eks")]
    e = Engine(hosts)
    d = e.decide({"slices": [{"kind": "gpu"}], "backends": ["eks-1", "static"]}, "t")
    assert isinstance(d, Decision) and d.host_ids == ["e"]
    d = e.decide({"slices": [{"kind": "gpu"}], "backends": ["static", "eks"]}, "t")
    assert isinstance(d, Decision) and d.host_ids == ["s"]


def test_slice_kind_model_memory_profile_filters() -> None:
    hosts = [
        shared_host("l4", n=2),  # timeslice mode: slice-kind removes it for a gpu request
        gpu_host("a100", "A100-40GB", n=2),  # model
        gpu_host("h100", "H100-80GB", n=2),
    ]
    e = Engine(hosts)
    r = refuse(e, {"slices": [{"kind": "gpu", "model": "H100", "min_memory_gib": 120}]})
    assert removed(r) == {"slice-kind": (1, 2), "model": (1, 2), "memory": (1, 2)}
    # Memory is matched within the tolerance: an "80 GB" H100 reports 79.6 GiB and still counts as 80.
    assert isinstance(e.decide({"slices": [{"kind": "gpu", "min_memory_gib": 80}]}, "t"), Decision)

    e = Engine([mig_host("m", "A100-40GB", 1, [("1g.5gb", 0, 1)], on_demand=False)])
    r = refuse(e, {"slices": [{"kind": "mig", "profile": "3g.20gb"}]})
    assert removed(r) == {"profile": (1, 1)}
    r = refuse(e, {"slices": [{"kind": "mig", "profile": "3g.40gb"}]})  # an 80GB profile on a 40GB GPU
    assert removed(r) == {"profile": (1, 1)}
    profile = next(c for c in r.funnel.filters if c.name == "profile")
    assert profile.examples == ["m GPU 0: A100-40GB has no MIG profile 3g.40gb"]


def test_vgpu_type_filter() -> None:
    e = Engine([vgpu_host("v", n=2)])
    r = refuse(e, {"slices": [{"kind": "vgpu", "vgpu_type": "A16-16Q"}]})
    assert removed(r) == {"profile": (1, 2)}
    d = e.decide({"slices": [{"kind": "vgpu", "min_memory_gib": 3}]}, "t")
    assert isinstance(d, Decision) and d.allocations[0].vgpu_type == "A16-4Q"


def test_health_and_device_admin_filters() -> None:
    h = gpu_host("h", n=4)
    h.devices[0].health = "unhealthy"
    h.devices[1].health = "degraded"
    h.devices[2].admin_state = "drained"
    h.devices[3].admin_state = "quarantined"
    r = refuse(Engine([h]), {"slices": [{"kind": "gpu"}]})
    # Devices count against the first filter they fail; the host against the furthest any device got.
    assert removed(r) == {"health": (0, 2), "device-admin": (1, 2)}


def test_device_state_change_is_seen_at_once() -> None:
    e = Engine([gpu_host("h", n=1)])
    e.set_device_state("h", "GPU-h-0", health="unhealthy")
    assert isinstance(e.decide({"slices": [{"kind": "gpu"}]}, "t"), Refusal)
    e.set_device_state("h", "GPU-h-0", health="healthy")
    assert isinstance(e.decide({"slices": [{"kind": "gpu"}]}, "t"), Decision)
    e.set_host_state("h", "unreachable")
    assert removed(refuse(e, {"slices": [{"kind": "gpu"}]})) == {"host-state": (1, 1)}


def test_capacity_fit_and_nearest_fit() -> None:
    a, b = gpu_host("a", n=8), gpu_host("b", n=8)
    e = Engine([a, b])
    c = e.claim(e.decide({"slices": [{"kind": "gpu", "count": 8}]}, "t"))  # type: ignore[arg-type]
    e.claim(e.decide({"slices": [{"kind": "gpu", "count": 3}]}, "t"))  # type: ignore[arg-type]
    r = refuse(e, {"slices": [{"kind": "gpu", "count": 6}]})
    full = c.host_ids[0]
    other = "b" if full == "a" else "a"
    assert removed(r) == {"capacity": (1, 11), "fit": (1, 0)}
    nf = r.funnel.nearest_fit
    assert nf is not None and nf.host_id == other and nf.have == {"6 x gpu": 5}
    assert nf.satisfied == round(5 / 6, 3)
    body = r.to_problem()
    assert body["status"] == 409 and body["nearest_fit"]["host"] == other
    assert {f["filter"] for f in body["filters"]} == {"capacity", "fit"}


def test_quota_callable_blocks_with_403_and_names_the_quota() -> None:
    calls: list[tuple[str, str, str, int]] = []

    def quota(tenant: str, kind: str, model: str, units: int) -> str | None:
        calls.append((tenant, kind, model, units))
        return "gpu:H100-80GB" if model == "H100-80GB" and units > 2 else None

    e = Engine([gpu_host("h", n=8), gpu_host("a", "A100-40GB", n=8)], quota=quota)
    assert isinstance(e.decide({"slices": [{"kind": "gpu", "count": 2, "model": "H100"}]}, "acme"), Decision)
    r = refuse(e, {"slices": [{"kind": "gpu", "count": 4, "model": "H100"}]}, "acme")
    assert r.status == 403 and r.quota == "gpu:H100-80GB" and r.slug == "quota-exceeded"
    assert removed(r)["quota"] == (1, 8)
    assert ("acme", "gpu", "H100-80GB", 4) in calls
    # Without a model the quota only removes the model it blocks: the A100 host takes it.
    d = e.decide({"slices": [{"kind": "gpu", "count": 4}]}, "acme")
    assert isinstance(d, Decision) and d.host_ids == ["a"]


def test_dry_run_explain_funnel_on_success_and_dry_run_is_not_claimable() -> None:
    e = Engine([gpu_host("a", n=2), gpu_host("b", n=2, state="drained")])
    d = e.decide({"slices": [{"kind": "gpu"}]}, "t", dry_run=True, explain=True)
    assert isinstance(d, Decision) and d.funnel is not None
    assert d.funnel.fitting_hosts == 1
    assert {c.name: c.removed_hosts for c in d.funnel.filters}["host-state"] == 1
    with pytest.raises(PlacementError):
        e.claim(d)
