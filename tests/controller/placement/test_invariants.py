"""Property-style: random claim/release sequences never give a slice twice and leak nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.placement import Decision, Engine, mig
from controller.placement.index import Index
from controller.placement.model import host_offers
from tests.support.placement_fleet import a100_vgpu_host, gpu_host, mig_host, shared_host, vgpu_host

A100_VGPU = ["A100-3-20C", "A100-2-10C", "A100-1-5C", "A100-7-40C", "A100-20C", "A100-4C", "A100-10C"]


def fleet(rng: random.Random) -> Engine:
    hosts = []
    for i in range(24):
        pg, az = f"pg{i % 6}", f"az{i % 3}"
        kind = i % 5
        if kind == 0:
            hosts.append(gpu_host(f"h{i}", "H100-80GB", rng.choice([4, 8]), pg=pg, az=az))
        elif kind == 1:
            layout = [("3g.20gb", 0, 4), ("2g.10gb", 4, 2), ("1g.5gb", 6, 1)] if i % 2 else []
            hosts.append(mig_host(f"h{i}", "A100-40GB", 2, layout, on_demand=bool(i % 3), pg=pg, az=az))
        elif kind == 2:
            hosts.append(mig_host(f"h{i}", "H100-80GB", 2, [], on_demand=True, pg=pg, az=az))
        elif kind == 3:
            hosts.append(
                shared_host(
                    f"h{i}", "L4", 4, replicas=rng.choice([2, 4]), mode=rng.choice(["timeslice", "mps"]), pg=pg, az=az
                )
            )
        elif i % 2:
            hosts.append(vgpu_host(f"h{i}", 2, pg=pg, az=az))
        else:
            # A100 vGPU hosts: MIG-backed on one kind of layout, time-sliced on the others.
            layout = rng.choice([None, [("3g.20gb", 0, 4), ("3g.20gb", 4, 4)], [("2g.10gb", 0, 2), ("1g.5gb", 2, 1)]])
            hosts.append(a100_vgpu_host(f"h{i}", 2, layout, pg=pg, az=az))
    return Engine(hosts)


def random_request(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    if r < 0.25:
        s = {"kind": "gpu", "count": rng.choice([1, 1, 2, 4, 8])}
    elif r < 0.6:
        model = rng.choice(["A100-40GB", "H100-80GB"])
        geom = mig.geometry(model)
        assert geom is not None
        prof = rng.choice(sorted(geom.profiles))
        s = {"kind": "mig", "model": model, "profile": prof, "count": rng.choice([1, 1, 2])}
    elif r < 0.8:
        s = {"kind": rng.choice(["timeslice", "mps"]), "count": rng.choice([1, 2, 3])}
    elif r < 0.9:
        s = {"kind": "vgpu", "vgpu_type": rng.choice(["A16-2Q", "A16-4Q"]), "count": rng.choice([1, 3])}
    else:
        s = {"kind": "vgpu", "vgpu_type": rng.choice(A100_VGPU), "count": rng.choice([1, 1, 2])}
    body: dict[str, Any] = {"slices": [s]}
    if rng.random() < 0.2:
        body["nodes"] = rng.choice([2, 3])
        body["topology"] = rng.choice(["same-placement-group", "same-az", "any"])
    if rng.random() < 0.3:
        body["policy"] = "spread"
    return body


def check(e: Engine) -> None:
    holders: dict[tuple[str, str], str] = {}
    for h in e.index.hosts.values():
        for d in h.devices:
            if d.claimed_by is not None:
                assert d.claimed_by in e.claims
            assert sum(d.share_claims.values()) <= d.replicas
            vtype, used = d.vgpu_in_use()
            if vtype is not None:
                # Time-sliced, equal-size mode: one type per GPU, within its maximum, never with MIG-backed ones.
                assert len({t for t, _ in d.vgpu_claims.values()}) == 1
                assert used <= d.vgpu_types[vtype].max_instances
                assert d.vgpu_types[vtype].mig_profile is None
                assert not any(m.vgpu_type for m in d.mig_instances)
            backed = [m for m in d.mig_instances if m.vgpu_type is not None]
            for m in backed:
                # A MIG-backed vGPU sits on a GPU instance of its type's profile, on a GPU in MIG-backed mode.
                assert d.mig_backed_vgpu and m.claimed_by is not None
                assert d.vgpu_types[m.vgpu_type].mig_profile == m.profile
            for t in {m.vgpu_type for m in backed}:
                assert sum(1 for m in backed if m.vgpu_type == t) <= d.vgpu_types[t].max_instances
            mask = 0
            for m in d.mig_instances:
                bits = ((1 << m.size) - 1) << m.start
                assert not mask & bits, f"overlapping MIG instances on {d.uuid}"
                mask |= bits
                if m.claimed_by is not None:
                    assert m.claimed_by in e.claims
        assert e.index.offers[h.id] == host_offers(h)
    # Whole GPUs, MIG instances and the GPU instances under MIG-backed vGPUs are held by at most one claim.
    for c in e.claims.values():
        for a in c.allocations:
            if a.kind in ("gpu", "mig") or (a.kind == "vgpu" and a.placement is not None):
                key = (a.device_uuid, f"{a.placement}")
                assert key not in holders, f"{key} given to {holders.get(key)} and {c.id}"
                holders[key] = c.id
    # The buckets agree with a fresh index built from the same hosts.
    fresh = Index(e.index.hosts.values())
    for k, b in e.index.buckets.items():
        fb = fresh.buckets.get(k)
        assert {u: set(v) for u, v in b.levels.items()} == ({u: set(v) for u, v in fb.levels.items()} if fb else {})


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_claims_and_releases(seed: int) -> None:
    rng = random.Random(seed)
    e = fleet(rng)
    initial = e.index.totals()
    initial_layouts = {d.uuid: d.mig_layout() for h in e.index.hosts.values() for d in h.devices}
    placed = refused = 0
    for step in range(400):
        if e.claims and rng.random() < 0.4:
            e.release(rng.choice(sorted(e.claims)))
        else:
            d = e.decide(random_request(rng), "t")
            if isinstance(d, Decision):
                e.claim(d)
                placed += 1
            else:
                refused += 1
        if step % 25 == 0:
            check(e)
    check(e)
    assert placed > 50 and refused > 0
    for cid in sorted(e.claims):
        e.release(cid)
    check(e)
    assert e.index.totals() == initial
    assert {d.uuid: d.mig_layout() for h in e.index.hosts.values() for d in h.devices} == initial_layouts
    assert all(d.is_idle() for h in e.index.hosts.values() for d in h.devices)
