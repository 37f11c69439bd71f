"""The tenant catalog read from the placement index, and refusals as tenants see them (no host names, no GPU
indexes) next to what admins see."""

from __future__ import annotations

import json

from controller.placement import Engine
from controller.placement.catalog import OfferCount, OfferGroup
from controller.placement.decision import Refusal
from tests.support.placement_fleet import gpu_host, mig_host, shared_host, vgpu_host


def _by_kind(engine: Engine) -> dict[tuple[str, str, str | None, bool], OfferCount]:
    return {
        (g.kind, g.model, g.profile or g.vgpu_type, g.on_demand): c
        for g, c in engine.catalog().items()
        if isinstance(g, OfferGroup)
    }


def test_catalog_counts_every_kind_per_backend_and_region() -> None:
    engine = Engine(
        [
            gpu_host("h100-a", n=8),
            gpu_host("h100-b", n=4, region="r2", backend="static-2"),
            mig_host("a100-mig", layout=[("3g.20gb", 0, 4), ("3g.20gb", 4, 4)], on_demand=False),
            shared_host("l4-ts", n=2, replicas=4),
            vgpu_host("a16-v", n=2),
        ]
    )
    groups = engine.catalog()
    h100 = {(g.backend, g.region): c for g, c in groups.items() if g.kind == "gpu"}
    assert {k: (c.free, c.hosts, c.max_per_host) for k, c in h100.items()} == {
        ("static-1", "r1"): (8, 1, 8),
        ("static-2", "r2"): (4, 1, 4),
    }
    kinds = _by_kind(engine)
    assert kinds[("mig", "A100-40GB", "3g.20gb", False)].free == 2
    assert kinds[("timeslice", "L4", None, False)].free == 8
    assert kinds[("vgpu", "A16", "A16-2Q", False)].free == 16 and kinds[("vgpu", "A16", "A16-4Q", False)].free == 8

    # A claim takes its units out of the catalog; released, they come back.
    decision = engine.decide({"slices": [{"kind": "gpu", "count": 6}]}, tenant="acme")
    claim = engine.claim(decision)
    after = {(g.backend, g.kind): c.free for g, c in engine.catalog().items() if g.kind == "gpu"}
    assert sum(after.values()) == 12 - 6
    engine.release(claim)
    assert sum(c.free for g, c in engine.catalog().items() if g.kind == "gpu") == 12


def test_on_demand_mig_and_hosts_that_offer_nothing() -> None:
    host = mig_host("a100-od", on_demand=True)
    drained = gpu_host("h100-drained", n=8, state="drained")
    engine = Engine([host, drained])
    kinds = _by_kind(engine)
    assert kinds[("mig", "A100-40GB", "1g.5gb", True)].free == 7
    assert not any(k[0] == "gpu" for k in kinds), "a drained host offers nothing"


def test_a_backend_that_cannot_hand_out_a_kind_offers_none_of_it() -> None:
    nova_like = shared_host("l4-nova", n=2, replicas=4, slice_kinds=frozenset({"gpu", "vgpu"}))
    engine = Engine([nova_like])
    assert engine.catalog() == {}


def test_tenants_see_counts_and_reasons_admins_see_hosts() -> None:
    hosts = [
        gpu_host("h100-secret-0", n=2),
        gpu_host("h100-secret-1", n=2),
        gpu_host("drained-x", n=8, state="drained"),
    ]
    engine = Engine(hosts)
    for _ in range(2):  # another tenant holds every GPU of the two ready hosts
        engine.claim(engine.decide({"slices": [{"kind": "gpu", "count": 2}]}, tenant="other"))
    refusal = engine.decide({"slices": [{"kind": "gpu", "count": 2}]}, tenant="acme", explain=True)
    assert isinstance(refusal, Refusal)
    admin = refusal.extensions()
    tenant = refusal.extensions(hosts=False)
    admin_text, tenant_text = json.dumps(admin), json.dumps(tenant)
    assert "h100-secret-0 GPU 0: no free gpu capacity" in admin_text and admin["nearest_fit"]["host"] == "drained-x"
    for secret in ("h100-secret", "drained-x", "GPU-", "GPU 0", "GPU 1"):
        assert secret not in tenant_text, (secret, tenant)
    assert tenant["candidates"] == admin["candidates"] == {"hosts": 3, "devices": 12}
    by_filter = {f["filter"]: f for f in tenant["filters"]}
    assert by_filter["host-state"]["reasons"] == ["host is drained"] and "examples" not in by_filter["host-state"]
    assert by_filter["capacity"]["reasons"] == ["no free gpu capacity"]
    assert by_filter["capacity"]["removed_hosts"] == 2 and by_filter["capacity"]["removed_devices"] == 4
    assert [f["removed_hosts"] for f in tenant["filters"]] == [f["removed_hosts"] for f in admin["filters"]]
    assert "host" not in tenant["nearest_fit"] and tenant["nearest_fit"]["missing"] == ["host is drained"]
