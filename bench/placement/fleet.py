"""A synthetic fleet shaped like a large EKS + OpenStack estate, and a seeded mix of tenant requests."""

from __future__ import annotations

import random
import statistics
import time
from functools import cache
from typing import Any

from controller.placement import Decision, Device, Engine, Host, MigSlot, VgpuOffer

REGIONS = {"us-east-1": ["us-east-1a", "us-east-1b", "us-east-1c"], "eu-west-1": ["eu-west-1a", "eu-west-1b"]}
PG_SIZE = 16  # hosts per placement group / rack
# EKS hosts' instance topology (EC2 DescribeInstanceTopology, three layers): hosts per network node at each layer.
LEAF_SIZE, BLOCK_SIZE, SPINE_SIZE = 64, 512, 4096

# share of hosts, model, memory MiB, backend kind, device mode
SHAPES = [
    (0.45, "H100-80GB", 81559, "eks", "whole"),
    (0.25, "A100-80GB", 81920, "ironic", "mig"),
    (0.20, "L4", 23034, "eks", "timeslice"),
    (0.10, "A16", 15356, "nova", "vgpu"),
]
GPUS_PER_HOST = 8
A100_LAYOUTS = [
    [("3g.40gb", 0, 4), ("3g.40gb", 4, 4)],
    [("2g.20gb", 0, 2), ("2g.20gb", 2, 2), ("2g.20gb", 4, 2), ("1g.10gb", 6, 1)],
    [("1g.10gb", s, 1) for s in range(7)],
    [],  # left empty for on-demand MIG
]


def build_fleet(n_hosts: int, seed: int = 7, preload: float = 0.3) -> list[Host]:
    """``n_hosts`` hosts of 8 GPUs each; ``preload`` of the capacity is already held by earlier leases."""
    rng = random.Random(seed)
    hosts: list[Host] = []
    azs = [(r, a) for r, lst in REGIONS.items() for a in lst]
    a16_types = {"A16-1Q": VgpuOffer(1024, 16), "A16-2Q": VgpuOffer(2048, 8), "A16-4Q": VgpuOffer(4096, 4)}
    bounds: list[tuple[float, tuple[float, str, int, str, str]]] = []
    acc = 0.0
    for shape in SHAPES:
        acc += shape[0]
        bounds.append((acc, shape))
    for i in range(n_hosts):
        x = (i * 0.6180339887) % 1.0  # low-discrepancy mix, stable across sizes
        shape = next(s for b, s in bounds if x < b)
        _, model, mem, kind, mode = shape
        # A network spine (and so its blocks, leaves and placement groups) sits in one AZ, as in EC2.
        region, az = azs[(i // SPINE_SIZE) % len(azs)]
        hid = f"h{i:06d}"
        devices: list[Device] = []
        # Whole-GPU hosts are leased by the host or a part of it: ``preload`` of them hold 1-8 leased GPUs.
        busy_whole = rng.randint(1, GPUS_PER_HOST) if rng.random() < preload else 0
        for j in range(GPUS_PER_HOST):
            d = Device(uuid=f"GPU-{i:06d}-{j}", index=j, model=model, memory_mib=mem, mode=mode)  # type: ignore[arg-type]
            if mode == "mig":
                layout = A100_LAYOUTS[(i + j) % len(A100_LAYOUTS)]
                d.mig_instances = [MigSlot(p, s, z, f"MIG-{i:06d}-{j}-{s}") for p, s, z in layout]
                for m in d.mig_instances:
                    if rng.random() < preload:
                        m.claimed_by = "preload"
            elif mode == "timeslice":
                d.replicas = 4
                if rng.random() < preload:
                    d.share_claims = {"preload": rng.randint(1, 4)}
            elif mode == "vgpu":
                d.vgpu_types = a16_types
                if rng.random() < preload:
                    d.vgpu_claims = {"preload": ("A16-2Q", rng.randint(1, 8))}
            elif j < busy_whole:
                d.claimed_by = "preload"
            if rng.random() < 0.002:
                d.health = "unhealthy"
            devices.append(d)
        hosts.append(
            Host(
                id=hid,
                backend_id=f"{kind}-{region}",
                backend_kind=kind,  # type: ignore[arg-type]
                region=region,
                az=az,
                placement_group=f"pg-{i // PG_SIZE:05d}",
                network_nodes=(
                    (f"nn1-{i // SPINE_SIZE:03d}", f"nn2-{i // BLOCK_SIZE:04d}", f"nn3-{i // LEAF_SIZE:05d}")
                    if kind == "eks"
                    else ()
                ),
                pool=f"{model}-pool",
                state="ready" if rng.random() > 0.005 else rng.choice(["drained", "unreachable"]),
                validation="validated" if rng.random() < 0.9 else "unvalidated",
                cost={"eks": 1.2, "ironic": 1.0, "nova": 1.1}[kind],
                on_demand_mig=(i % 2 == 0),
                devices=devices,
            )
        )
    return hosts


def mixed_requests(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """Single slices, multi-GPU same-host, multi-node same-placement-group requests and 16-node gangs under one
    layer-3 network node."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        r = rng.random()
        body: dict[str, Any]
        if r < 0.30:
            body = {"slices": [{"kind": "gpu", "model": "H100"}]}
        elif r < 0.45:
            body = {
                "slices": [{"kind": "gpu", "model": "H100-80GB", "count": rng.choice([2, 4, 8])}],
                "topology": "same-host",
            }
        elif r < 0.65:
            prof = rng.choice(["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "1g.20gb"])
            body = {"slices": [{"kind": "mig", "model": "A100-80GB", "profile": prof}]}
        elif r < 0.80:
            body = {"slices": [{"kind": "timeslice", "count": rng.choice([1, 2])}]}
        elif r < 0.88:
            body = {"slices": [{"kind": "vgpu", "vgpu_type": "A16-2Q"}]}
        elif r < 0.97:
            body = {
                "slices": [{"kind": "gpu", "model": "H100-80GB", "count": 8}],
                "nodes": rng.choice([2, 4]),
                "topology": "same-placement-group",
            }
        else:
            body = {
                "slices": [{"kind": "gpu", "model": "H100-80GB", "count": 8}],
                "nodes": 16,
                "topology": "same-network-node-layer-3",
            }
        if rng.random() < 0.1:
            body["regions"] = [rng.choice(list(REGIONS))]
        if rng.random() < 0.1:
            body["require_validated"] = True
        if rng.random() < 0.1:
            body["policy"] = "spread"
        out.append(body)
    return out


@cache
def _engine(fleet_size: int) -> Engine:
    return Engine(build_fleet(fleet_size))


def gpufabric_decision_latency(fleet_size: int, request: dict[str, Any], repeats: int = 200) -> dict[str, float]:
    """Decision latency (no claim) for one request on a synthetic fleet of ``fleet_size`` hosts, in ms.

    For side-by-side runs against OpenStack Placement: e.g. ``{"slices": [{"kind": "vgpu"}]}`` is the
    equivalent of ``GET /allocation_candidates?resources=VGPU:1``. The fleet is built once per size.
    """
    engine = _engine(fleet_size)
    times: list[float] = []
    ok = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = engine.decide(request, "bench")
        times.append((time.perf_counter() - t0) * 1000)
        ok += isinstance(d, Decision)
    times.sort()
    return {
        "fleet_size": fleet_size,
        "repeats": repeats,
        "placed": ok,
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "mean_ms": statistics.fmean(times),
    }
