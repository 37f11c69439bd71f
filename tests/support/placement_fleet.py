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


def a100_vgpu_host(hid: str, n: int = 2, layout: list[tuple[str, int, int]] | None = None, **kw: Any) -> Host:
    """A100 PCIe 40GB vGPU host with NVIDIA's A100-* types: MIG-backed on GPUs in MIG mode (``layout``: their
    GPU instances), time-sliced otherwise."""
    from drivers.gpus.catalog import load_catalog

    types = load_catalog().product("NVIDIA A100-PCIE-40GB").vgpu_types
    h = gpu_host(hid, "A100-40GB", n, **kw)
    for d in h.devices:
        d.mode = "vgpu"
        backed = layout is not None
        d.vgpu_types = {
            t.name: VgpuOffer(t.framebuffer_mib, t.max_instances, t.mig_profile)
            for t in types
            if (t.mig_profile is not None) == backed
        }
        d.mig_instances = [MigSlot(p, s, z, uuid=f"MIG-{d.uuid}-{s}") for p, s, z in (layout or [])]
    return h
