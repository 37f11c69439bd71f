"""The same fleet twice: rows in OpenStack Placement's database, and hosts in gpufabric's placement engine.

Every host (Placement: root provider) has VCPU=64 and MEMORY_MB=512000 and two A100 GPUs; each GPU (Placement: a
child "pGPU" provider, as Nova's libvirt driver reports it) offers 8 vGPUs and carries the trait CUSTOM_GPU_A100.
Nothing is allocated.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from controller.placement import Device, Host, VgpuOffer

GPUS_PER_HOST = 2
VGPUS_PER_GPU = 8
GPU_TRAIT = "CUSTOM_GPU_A100"
VGPU_TYPE = "A100-10C"  # NVIDIA A100 80GB, 10 GB framebuffer: 8 per GPU
ROOT_INVENTORY = {"VCPU": 64, "MEMORY_MB": 512000}

# The equivalent questions. Placement: which providers can give 1 VGPU (optionally on an A100)? gpufabric: where does
# 1 vGPU on an A100-class GPU go (the engine answers with one ranked choice, claims left out)?
GPUFABRIC_REQUEST = {"slices": [{"kind": "vgpu", "model": "A100"}]}


def _uuid(n: int, kind: int) -> str:
    return str(uuid.UUID(int=(kind << 96) | n))


def load_placement_fleet(db_path: Path, roots: int) -> dict[str, int]:
    """Insert ``roots`` hosts straight into Placement's sqlite database (REST would take ~26 min for 10,000).

    Writes what Placement's own API would: provider rows with root/parent ids and generation, inventories with
    Placement's defaults, and the trait links. Needs ``db sync`` done and the standard resource classes synced
    (Placement does that when it starts). The custom trait is created here if missing. Returns the row counts.
    """
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    con = sqlite3.connect(db_path, timeout=30)
    try:
        rc = dict(con.execute("SELECT name, id FROM resource_classes WHERE name IN ('VCPU','MEMORY_MB','VGPU')"))
        if len(rc) != 3:
            raise RuntimeError(f"standard resource classes not synced in {db_path} (found {rc}); start Placement first")
        row = con.execute("SELECT id FROM traits WHERE name = ?", (GPU_TRAIT,)).fetchone()
        if row is None:
            con.execute("INSERT INTO traits (name, created_at) VALUES (?, ?)", (GPU_TRAIT, now))
            row = con.execute("SELECT id FROM traits WHERE name = ?", (GPU_TRAIT,)).fetchone()
        trait_id = int(row[0])
        first = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM resource_providers").fetchone()[0]) + 1

        providers: list[tuple[object, ...]] = []
        inventories: list[tuple[object, ...]] = []
        rp_traits: list[tuple[object, ...]] = []
        per_root = 1 + GPUS_PER_HOST
        for i in range(roots):
            root_id = first + i * per_root
            name = f"bench-host-{i:06d}"
            # generation 1: each provider had its inventory set once (Placement bumps it on every change).
            providers.append((root_id, _uuid(i, 1), name, 1, root_id, None, now))
            for rc_name, total in ROOT_INVENTORY.items():
                inventories.append((root_id, rc[rc_name], total, 0, 1, total, 1, 1.0, now))
            for g in range(GPUS_PER_HOST):
                gpu_id = root_id + 1 + g
                providers.append((gpu_id, _uuid(i * GPUS_PER_HOST + g, 2), f"{name}_pgpu{g}", 2, root_id, root_id, now))
                inventories.append((gpu_id, rc["VGPU"], VGPUS_PER_GPU, 0, 1, VGPUS_PER_GPU, 1, 1.0, now))
                rp_traits.append((trait_id, gpu_id, now))
        with con:
            con.executemany(
                "INSERT INTO resource_providers (id, uuid, name, generation, root_provider_id, parent_provider_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                providers,
            )
            con.executemany(
                "INSERT INTO inventories (resource_provider_id, resource_class_id, total, reserved, min_unit, max_unit,"
                " step_size, allocation_ratio, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                inventories,
            )
            con.executemany(
                "INSERT INTO resource_provider_traits (trait_id, resource_provider_id, created_at) VALUES (?, ?, ?)",
                rp_traits,
            )
        return {"resource_providers": len(providers), "inventories": len(inventories), "traits": len(rp_traits)}
    finally:
        con.close()


def gpufabric_fleet(hosts: int) -> list[Host]:
    """The same fleet for gpufabric: ``hosts`` Nova hosts with 2 A100 GPUs in vGPU mode, 8 vGPUs each."""
    offer = {VGPU_TYPE: VgpuOffer(framebuffer_mib=10240, max_instances=VGPUS_PER_GPU)}
    return [
        Host(
            id=f"bench-host-{i:06d}",
            backend_id="nova-bench",
            backend_kind="nova",
            region="region-1",
            az="az-1",
            state="ready",
            devices=[
                Device(
                    uuid=f"GPU-{i:06d}-{g}",
                    index=g,
                    model="A100-80GB",
                    memory_mib=81920,
                    mode="vgpu",
                    vgpu_types=dict(offer),
                )
                for g in range(GPUS_PER_HOST)
            ],
        )
        for i in range(hosts)
    ]
