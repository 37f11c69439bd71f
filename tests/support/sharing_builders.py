"""Hand-built inventories (A100-40GB numbers from the GPU catalog) for tests that need MIG layouts."""

from __future__ import annotations

from drivers.contract.inventory import (
    ComputeInstance,
    Gpu,
    HostIdentity,
    Inventory,
    MigInstance,
    MigState,
    PciInfo,
    Placement,
)

A100_PROFILES = {  # name: (profile_id, slices, memory_mib, sm_count, placement size)
    "1g.5gb": (19, 1, 4864, 14, 1),
    "2g.10gb": (14, 2, 9856, 28, 2),
    "3g.20gb": (9, 3, 19968, 42, 4),
    "7g.40gb": (0, 7, 40192, 98, 8),
}


def mig_instance(profile: str, start: int, gi_id: int, uuid: str) -> MigInstance:
    pid, slices, memory, sms, size = A100_PROFILES[profile]
    return MigInstance(
        gpu_instance_id=gi_id,
        profile=profile,
        profile_id=pid,
        placement=Placement(start=start, size=size),
        memory_mib=memory,
        sm_count=sms,
        uuid=uuid,
        compute_instances=[
            ComputeInstance(id=0, profile_id=0, slices=slices, placement=Placement(start=0, size=slices))
        ],
    )


def a100(index: int, layout: list[str] | None) -> Gpu:
    """An A100-SXM4-40GB; ``layout`` None = MIG disabled, else the profiles in placement order."""
    uuid = f"GPU-a100a100-0000-0000-0000-00000000000{index}"
    instances = []
    start = 0
    for n, profile in enumerate(layout or []):
        instances.append(mig_instance(profile, start, n + 1, f"MIG-{index}{n}a00000-0000-0000-0000-000000000000"))
        start += A100_PROFILES[profile][4]
    return Gpu(
        index=index,
        uuid=uuid,
        name="NVIDIA A100-SXM4-40GB",
        pci=PciInfo(bus_id=f"00000000:{0x17 + index:02X}:00.0", device_id="0x20B010DE"),
        architecture="ampere",
        compute_capability="8.0",
        memory_total_mib=40960,
        mig=MigState(
            capable=True,
            current=layout is not None,
            pending=layout is not None,
            state="enabled" if layout is not None else "disabled",
        ),
        mig_instances=instances,
    )


def inventory(gpus: list[Gpu]) -> Inventory:
    return Inventory(
        host=HostIdentity(hostname="test-host", agent_version="0.1.0", simulated=True),
        driver_version="550.90.07",
        cuda_driver_version="12.4",
        gpus=gpus,
    )
