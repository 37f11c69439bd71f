"""The grouped refusal funnel (``filters.explain``) equals the exhaustive per-host walk (``explain_exhaustive``).

Randomised fleets mix models, modes, MIG layouts, shares, vGPUs, mixed-GPU and GPU-less hosts, drained /
quarantined / unreachable hosts, unhealthy and drained GPUs, quotas, regions / AZs / placement groups and
claims; the index is churned through the engine's API (claims, releases, state changes, replacements and
removals) so the signature groups are checked after incremental updates, not only after a fresh build.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from controller.placement import Decision, Device, Engine, Host, MigSlot, VgpuOffer, mig, parse_request
from controller.placement.filters import resolve
from controller.placement.index import DOMAINS, Index
from drivers.gpus.catalog import load_catalog

MODELS = {"H100-80GB": 81559, "A100-40GB": 40960, "A100-80GB": 81920, "L4": 23034, "A16": 15356}
MIG_MODELS = ("A100-40GB", "A100-80GB", "H100-80GB")
REGIONS = {"r1": ["r1a", "r1b"], "r2": ["r2a", "r2b", "r2c"]}
A100_PCIE = load_catalog().product("NVIDIA A100-PCIE-40GB")
BACKENDS = [("static-1", "static"), ("eks-1", "eks"), ("ironic-1", "ironic"), ("nova-1", "nova")]


def random_layout(rng: random.Random, model: str) -> list[tuple[str, int, int]]:
    geom = mig.geometry(model)
    assert geom is not None
    names = sorted(p for p in geom.profiles if not geom.profiles[p].is_variant)
    layout: mig.Layout = ()
    for _ in range(rng.choice([0, 1, 2, 3, 5, 7])):
        p = rng.choice(names)
        free = mig.free_placements(model, layout, p)
        if free:
            s, n = rng.choice(free)
            layout = mig.add(layout, s, n, p)
    return [(p, s, n) for s, n, p in layout]


def random_device(rng: random.Random, hid: str, j: int, model: str, mode: str) -> Device:
    d = Device(uuid=f"GPU-{hid}-{j}", index=j, model=model, memory_mib=MODELS[model], mode=mode)  # type: ignore[arg-type]
    if mode == "mig":
        d.mig_instances = [
            MigSlot(p, s, n, f"MIG-{hid}-{j}-{s}", claimed_by="pre" if rng.random() < 0.3 else None)
            for p, s, n in random_layout(rng, model)
        ]
    elif mode in ("timeslice", "mps"):
        d.replicas = rng.choice([2, 4])
        if rng.random() < 0.4:
            d.share_claims = {"pre": rng.randint(1, d.replicas)}
    elif mode == "vgpu" and model == "A100-40GB":
        # NVIDIA's A100 PCIe 40GB types: MIG-backed on a GPU in MIG mode (on its GPU instances), else time-sliced.
        backed = rng.random() < 0.5
        d.vgpu_types = {
            t.name: VgpuOffer(t.framebuffer_mib, t.max_instances, t.mig_profile)
            for t in A100_PCIE.vgpu_types
            if (t.mig_profile is not None) == backed
        }
        if backed:
            d.mig_instances = [MigSlot(p, s, n, f"MIG-{hid}-{j}-{s}") for p, s, n in random_layout(rng, model)]
            for m in d.mig_instances:
                types = [t for t, v in d.vgpu_types.items() if v.mig_profile == m.profile]
                if types and rng.random() < 0.3:
                    m.claimed_by, m.vgpu_type = "pre", types[0]
        elif rng.random() < 0.4:
            d.vgpu_claims = {"pre": (rng.choice(sorted(d.vgpu_types)), 1)}
    elif mode == "vgpu":
        d.vgpu_types = {"A16-1Q": VgpuOffer(1024, 16), "A16-2Q": VgpuOffer(2048, 8), "A16-4Q": VgpuOffer(4096, 4)}
        if rng.random() < 0.4:
            d.vgpu_claims = {"pre": (rng.choice(sorted(d.vgpu_types)), rng.randint(1, 4))}
    elif rng.random() < 0.3:
        d.claimed_by = "pre"
    r = rng.random()
    if r < 0.05:
        d.health = rng.choice(["degraded", "unhealthy", "unknown"])
    elif r < 0.08:
        d.admin_state = rng.choice(["drained", "quarantined"])
    return d


def random_network_nodes(rng: random.Random) -> tuple[str | None, ...]:
    """A tree of network nodes (2 spines, 2 blocks each, 2 leaves each), or none recorded (a third of hosts)."""
    if rng.random() < 0.33:
        return ()
    spine, block, leaf = rng.randrange(2), rng.randrange(2), rng.randrange(2)
    return (f"nn-{spine}", f"nn-{spine}-{block}", f"nn-{spine}-{block}-{leaf}")


def random_host(rng: random.Random, i: int) -> Host:
    hid = f"h{i:04d}"
    region = rng.choice(sorted(REGIONS))
    backend_id, backend_kind = rng.choice(BACKENDS)
    shape = rng.random()
    n = rng.choice([1, 2, 4, 8])
    devices: list[Device] = []
    if shape < 0.03:
        n = 0
    elif shape < 0.10:  # mixed models / modes on one host
        for j in range(n):
            model = rng.choice(sorted(MODELS))
            mode = rng.choice(["whole", "mig"] if model in MIG_MODELS else ["whole", "timeslice"])
            devices.append(random_device(rng, hid, j, model, mode))
    else:
        model = rng.choice(sorted(MODELS))
        modes = ["whole", "timeslice", "mps"]
        if model in MIG_MODELS:
            modes += ["mig", "mig"]
        if model == "A16":
            modes = ["vgpu", "vgpu", "whole"]
        if model == "A100-40GB":
            modes += ["vgpu", "vgpu"]
        mode = rng.choice(modes)
        devices = [random_device(rng, hid, j, model, mode) for j in range(n)]
    return Host(
        id=hid,
        backend_id=backend_id,
        backend_kind=backend_kind,  # type: ignore[arg-type]
        region=region,
        az=rng.choice(REGIONS[region]),
        # Few placement groups, so gangs sometimes fit, sometimes tie, sometimes find no group at all.
        placement_group=rng.choice([None, "pg1", "pg2", "pg3", "pg4"]),
        network_nodes=random_network_nodes(rng),
        aggregate=rng.choice([None, "agg-1", "agg-2", "agg-3"]),
        state=rng.choices(["ready", "drained", "quarantined", "unreachable"], [85, 5, 5, 5])[0],  # type: ignore[arg-type]
        validation=rng.choice(["validated", "validated", "unvalidated", "failed"]),  # type: ignore[arg-type]
        on_demand_mig=rng.random() < 0.5,
        devices=devices,
    )


def quota(tenant: str, kind: str, model: str, units: int) -> str | None:
    if tenant == "capped" and model == "H100-80GB" and units > 2:
        return "gpu:H100-80GB"
    if tenant == "capped" and kind == "mig" and units > 3:
        return f"mig:{model}"
    return None


def random_slice(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["gpu", "gpu", "mig", "mig", "timeslice", "mps", "vgpu"])
    s: dict[str, Any] = {"kind": kind, "count": rng.choice([1, 1, 2, 3, 4, 8, 9])}
    if kind == "mig":
        model = rng.choice(MIG_MODELS)
        geom = mig.geometry(model)
        assert geom is not None
        if rng.random() < 0.7:
            s["profile"] = rng.choice(sorted(geom.profiles))
            if rng.random() < 0.5:
                s["model"] = rng.choice([model, model.split("-")[0]])
        else:
            s["min_memory_gib"] = rng.choice([5, 10, 20, 40, 80])
            if rng.random() < 0.5:
                s["model"] = model
        s["count"] = rng.choice([1, 1, 2, 3, 7])
    elif kind == "vgpu":
        if rng.random() < 0.6:
            s["vgpu_type"] = rng.choice(
                ["A16-1Q", "A16-2Q", "A16-4Q", "A16-8Q", "A100-3-20C", "A100-1-5C", "A100-7-40C", "A100-4C", "A100-20C"]
            )
        if rng.random() < 0.2:
            s["min_memory_gib"] = rng.choice([2, 4])
    else:
        if rng.random() < 0.5:
            s["model"] = rng.choice(["H100", "H100-80GB", "A100", "A100-40GB", "L4", "A16", "B200"])
        if rng.random() < 0.2:
            s["min_memory_gib"] = rng.choice([16, 40, 80])
    return s


def random_request(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"slices": [random_slice(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]}
    if rng.random() < 0.35:
        body["nodes"] = rng.choice([2, 3, 5, 40])
        body["topology"] = rng.choice(
            ["same-placement-group", "same-az", "same-region", "any", "same-aggregate"]
            + [f"same-network-node-layer-{n}" for n in (1, 2, 3)]
        )
    elif rng.random() < 0.2:
        body["topology"] = "same-host"
    if rng.random() < 0.15:
        body["regions"] = [rng.choice(sorted(REGIONS))]
    if rng.random() < 0.15:
        body["azs"] = rng.sample(["r1a", "r1b", "r2a", "r2b", "r2c"], 2)
    if rng.random() < 0.15:
        body["backends"] = [rng.choice(["static-1", "eks", "ironic", "nova-1"])]
    if rng.random() < 0.2:
        body["require_validated"] = True
    if rng.random() < 0.3:
        body["policy"] = "spread"
    return body


def assert_same_funnel(e: Engine, body: dict[str, Any], tenant: str) -> None:
    req = parse_request(body)
    policy = req.policy or e.weighers.default_policy
    demands = resolve(req, e.index, tenant, e.quota)
    fast = e._funnel(req, demands, policy)
    slow = e._funnel_exhaustive(req, demands, policy)
    assert fast == slow, body


def assert_groups_consistent(e: Engine) -> None:
    """The incrementally kept signature groups equal those of an index built afresh from the same hosts."""
    fresh = Index(e.index.hosts.values())
    assert e.index.group_of == fresh.group_of
    assert e.index.n_devices == fresh.n_devices == sum(len(h.devices) for h in e.index.hosts.values())
    assert {k: set(g.members) for k, g in e.index.coarse.items()} == {
        k: set(g.members) for k, g in fresh.coarse.items()
    }
    assert {(k, f): set(g.members) for k, fs in e.index.fine.items() for f, g in fs.items()} == {
        (k, f): set(g.members) for k, fs in fresh.fine.items() for f, g in fs.items()
    }
    # Per-domain counts of the fine groups, kept current through the churn.
    for fines in e.index.fine.values():
        for g in fines.values():
            topologies = ["same-placement-group", "same-az", "same-region", "any"]
            topologies += [f"same-network-node-layer-{n}" for n in (3, 2, 1)] + ["same-aggregate"]
            for i, (attr, topology) in enumerate(zip(DOMAINS, topologies, strict=True)):
                want = Counter(e.index.hosts[h].domain(topology) for h in g.members)
                assert g.domain_counts(attr) == want
                assert want == Counter(e.index.domains_of(h)[i] for h in g.members)
    # Host order: the seq numbers follow the order of ``hosts``.
    seqs = [e.index.seq[h] for h in e.index.hosts]
    assert seqs == sorted(seqs)


def churn(e: Engine, rng: random.Random, next_id: list[int]) -> None:
    r = rng.random()
    hosts = sorted(e.index.hosts)
    if not hosts:
        r = 1.0
    if r < 0.45:
        d = e.decide(random_request(rng), rng.choice(["t", "capped"]))
        if isinstance(d, Decision):
            e.claim(d)
    elif r < 0.65 and e.claims:
        e.release(rng.choice(sorted(e.claims)))
    elif r < 0.75:
        e.set_host_state(
            rng.choice(hosts),
            state=rng.choice(["ready", "ready", "drained", "quarantined"]),
            validation=rng.choice([None, "validated", "failed"]),
        )
    elif r < 0.85:
        h = e.index.hosts[rng.choice(hosts)]
        if h.devices:
            e.set_device_state(
                h.id,
                rng.choice(h.devices).uuid,
                health=rng.choice(["healthy", "healthy", "unhealthy"]),
                admin=rng.choice(["active", "active", "drained"]),
            )
    elif r < 0.92:
        # Replace a host that no claim holds (its inventory changed), keeping its id and place in the order.
        held = {a.host_id for c in e.claims.values() for a in c.allocations}
        free = [h for h in hosts if h not in held]
        if free:
            hid = rng.choice(free)
            new = random_host(rng, next_id[0])
            next_id[0] += 1
            new.id = hid
            for d in new.devices:
                d.uuid = f"GPU-{hid}-{next_id[0]}-{d.index}"
            e.upsert_host(new)
    elif r < 0.96:
        held = {a.host_id for c in e.claims.values() for a in c.allocations}
        free = [h for h in hosts if h not in held]
        if free:
            e.remove_host(rng.choice(free))
    else:
        e.upsert_host(random_host(rng, next_id[0]))
        next_id[0] += 1


@pytest.mark.parametrize("seed", range(12))
def test_grouped_funnel_equals_exhaustive(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 5, 40, 120, 200])
    e = Engine([random_host(rng, i) for i in range(n)], quota=quota)
    next_id = [n]
    for step in range(40):
        for _ in range(rng.choice([1, 3, 10])):
            churn(e, rng, next_id)
        for _ in range(4):
            assert_same_funnel(e, random_request(rng), rng.choice(["t", "capped"]))
        if step % 20 == 0:
            assert_groups_consistent(e)
    assert_groups_consistent(e)


def test_refusals_and_dry_runs_use_the_grouped_funnel() -> None:
    """Whole-engine check on a uniform fleet: many hosts per group, ties in nearest fit and in topology."""
    rng = random.Random(99)
    hosts = []
    for i in range(200):
        h = random_host(rng, i)
        h.placement_group = f"pg{i % 10}"
        if i % 7:  # most hosts alike at host level: large coarse groups, examples from one group
            h.state, h.backend_id, h.backend_kind, h.region, h.az = "ready", "eks-1", "eks", "r1", "r1a"
            h.validation, h.on_demand_mig = "validated", True
        for d in h.devices:
            d.health, d.admin_state = "healthy", "active"
        hosts.append(h)
    e = Engine(hosts, quota=quota)
    for body in (
        {"slices": [{"kind": "gpu", "count": 9}]},
        {"slices": [{"kind": "mig", "profile": "7g.80gb", "model": "H100", "count": 9}]},
        {"slices": [{"kind": "gpu", "count": 1}], "nodes": 30, "topology": "same-placement-group"},
        {"slices": [{"kind": "timeslice", "count": 1}], "nodes": 500},
        {"slices": [{"kind": "gpu", "count": 1, "model": "L4"}], "azs": ["r2b"]},
        {"slices": [{"kind": "vgpu", "vgpu_type": "A16-4Q", "count": 40}], "require_validated": True},
    ):
        r = e.decide(body, "t")
        assert not isinstance(r, Decision)
        assert r.funnel == e._funnel_exhaustive(
            parse_request(body), resolve(parse_request(body), e.index, "t", quota), "pack"
        )
    d = e.decide({"slices": [{"kind": "gpu"}]}, "t", dry_run=True, explain=True)
    assert isinstance(d, Decision) and d.funnel is not None and d.funnel.fitting_hosts > 0
    req = parse_request({"slices": [{"kind": "gpu"}]})
    assert d.funnel == e._funnel_exhaustive(req, resolve(req, e.index, "t", quota), "pack")
