"""Small hand-built fleets for the placement tests."""

from __future__ import annotations

from typing import Any

from controller.placement import Device, Host, MigSlot, VgpuOffer

MEM = {"H100-80GB": 81559, "A100-40GB": 40960, "A100-80GB": 81920, "L4": 23034, "A16": 15356}


def gpu_host(
    hid: str,
    model: str = "H100-80GB",
    n: int = 8,
    *,
    backend: str = "static-1",
    kind: str = "static",
    region: str = "r1",
    az: str = "r1a",
    pg: str | None = "pg1",
    **kw: Any,
) -> Host:
    devices = [Device(uuid=f"GPU-{hid}-{i}", index=i, model=model, memory_mib=MEM[model]) for i in range(n)]
    return Host(
        id=hid,
        backend_id=backend,
        backend_kind=kind,  # type: ignore[arg-type]
        region=region,
        az=az,
        placement_group=pg,
        devices=devices,
        **kw,  # type: ignore[arg-type]
    )


def mig_host(
    hid: str,
    model: str = "A100-40GB",
    n: int = 1,
    layout: list[tuple[str, int, int]] | None = None,
    *,
    on_demand: bool = True,
    **kw: Any,
) -> Host:
    h = gpu_host(hid, model, n, on_demand_mig=on_demand, **kw)
    for d in h.devices:
        d.mode = "mig"
        d.mig_instances = [MigSlot(profile=p, start=s, size=z, uuid=f"MIG-{d.uuid}-{s}") for p, s, z in (layout or [])]
    return h


def shared_host(hid: str, model: str = "L4", n: int = 4, replicas: int = 4, mode: str = "timeslice", **kw: Any) -> Host:
    h = gpu_host(hid, model, n, **kw)
    for d in h.devices:
        d.mode = mode  # type: ignore[assignment]
        d.replicas = replicas
    return h


def vgpu_host(hid: str, n: int = 2, **kw: Any) -> Host:
    h = gpu_host(hid, "A16", n, **kw)
    for d in h.devices:
        d.mode = "vgpu"
        d.vgpu_types = {"A16-2Q": VgpuOffer(2048, 8), "A16-4Q": VgpuOffer(4096, 4)}
    return h
