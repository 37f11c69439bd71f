"""Reconcile's comparisons of a cloud's GPU usage with gpufabric's live claims (Nova's Placement check, Cyborg's
check), fed with Placement and Cyborg views made here: the claims come from the store's LeaseDirectory. The same
checks against the real services are in ``tests/controller/backends/openstack``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.backends.contract import LeaseDirectory
from controller.backends.cyborg.check import CyborgObserved, cyborg_check
from controller.backends.nova.placement_check import placement_check
from controller.backends.openstack.hosts import Observed
from controller.store.db import Database
from controller.store.lease_directory import StoreLeaseDirectory
from controller.store.models import Backend, Device, Host, Lease, SliceClaim
from drivers.openstack import PlacementView, ResourceProvider, TaggedResource
from drivers.openstack.cyborg import Arq, Deployable
from drivers.openstack.placement import ProviderInventory


def _view(host: str, usages: dict[str, int], totals: dict[str, int]) -> PlacementView:
    inventories = {rc: ProviderInventory(total=n, max_unit=n) for rc, n in totals.items()}
    root = ResourceProvider(
        uuid=f"rp-{host}", name=host, root_uuid=f"rp-{host}", inventories=inventories, usages=usages
    )
    return PlacementView(providers=[root])


def _store(db: Database, kind: str, claims: list[tuple[str, str, str, int, int]], live: dict[str, str]) -> int:
    """Backend ``cloud`` of ``kind`` with host cmp1 (GPUs G0, G1: CUSTOM_GPU, deployables d0, d1); ``claims``:
    (lease, device, kind, slot, allocation); ``live``: lease -> state."""
    now = datetime.now(UTC)
    with db.session() as session:
        backend = Backend(name="cloud", kind=kind)
        session.add(backend)
        session.flush()
        host = Host(hostname="cmp1", backend_id=backend.id, status="ready")
        host.devices = [
            Device(
                uuid=f"G{i}",
                index=i,
                model="NVIDIA L4",
                memory_mib=23034,
                details={"resource_class": "CUSTOM_GPU", "deployable": f"d{i}"},
            )
            for i in range(2)
        ]
        session.add(host)
        for lease_id, state in live.items():
            session.add(Lease(id=lease_id, tenant="acme", request_hash="h", request={}, state=state, backend=kind))
        session.flush()
        for lease_id, device, unit, slot, allocation in claims:
            resource = f"{'mig' if unit == 'vgpu-mig' else unit}:{device}"
            claim_kind = "vgpu" if unit.startswith("vgpu") else unit
            session.add(
                SliceClaim(
                    lease_id=lease_id, tenant="acme", host_id=host.id, device_uuid=device, resource=resource, slot=slot,
                    allocation=allocation, kind=claim_kind, model="NVIDIA L4", claimed_at=now,
                )
            )  # fmt: skip
        return backend.id


@pytest.fixture
def directory(migrated_db: Database) -> LeaseDirectory:
    return StoreLeaseDirectory(migrated_db)


def test_nova_placement_check_counts_live_claims(migrated_db: Database, directory: LeaseDirectory) -> None:
    # A whole GPU (CUSTOM_GPU) and a MIG-backed vGPU holding two memory slices of G1: one VGPU in Placement.
    claims = [("A", "G0", "gpu", 0, 0), ("B", "G1", "vgpu-mig", 0, 0), ("B", "G1", "vgpu-mig", 1, 0)]
    _store(migrated_db, "nova", claims, {"A": "ready", "B": "ready"})
    agrees = _view("cmp1", {"CUSTOM_GPU": 1, "VGPU": 1}, {"CUSTOM_GPU": 2, "VGPU": 4})
    report = placement_check(migrated_db, directory, "cloud", Observed([], [], [], agrees))
    assert report == {"checked": True, "hosts": 1, "mismatches": []}

    differs = _view("cmp1", {"CUSTOM_GPU": 0, "VGPU": 1}, {"CUSTOM_GPU": 2, "VGPU": 4})
    (mismatch,) = placement_check(migrated_db, directory, "cloud", Observed([], [], [], differs))["mismatches"]
    assert (mismatch["kind"], mismatch["resource_class"], mismatch["expected"], mismatch["actual"]) == (
        "used",
        "CUSTOM_GPU",
        1,
        0,
    )


def test_cyborg_check_compares_claims_with_arqs_and_usage(migrated_db: Database, directory: LeaseDirectory) -> None:
    _store(migrated_db, "cyborg", [("A", "G0", "gpu", 0, 0)], {"A": "ready", "D": "released"})
    seen = CyborgObserved(
        docs=[],
        skipped=[],
        tagged=[
            TaggedResource(kind="nova_server", id="srv-A", name="a", lease_id="A", state="ACTIVE"),
            TaggedResource(kind="nova_server", id="srv-D", name="d", lease_id="D", state="ACTIVE"),
        ],
        placement=_view("cmp1", {"PGPU": 1}, {"PGPU": 2}),
        deployables=[
            Deployable(uuid="d0", name="cmp1_0", rp_uuid="rp-cmp1", driver_name="x", num_accelerators=1, attributes={}),
            Deployable(uuid="d1", name="cmp1_1", rp_uuid="rp-cmp1", driver_name="x", num_accelerators=1, attributes={}),
        ],
        arqs=[
            Arq(uuid="q-A", state="Bound", device_profile_name="p", instance_uuid="srv-A", hostname="cmp1"),
            Arq(uuid="q-D", state="Initial", device_profile_name="p", instance_uuid="srv-D"),
        ],
    )
    report = cyborg_check(migrated_db, directory, "cloud", seen)
    assert report["checked"] and report["hosts"] == 1
    assert report["mismatches"] == []  # one GPU claimed, one PGPU used, one ARQ bound, its deployable known
    (orphan,) = report["cyborg"]["orphan_arqs"]  # D's server belongs to a released lease; A's is live
    assert (orphan["id"], orphan["lease_id"]) == ("q-D", "D") and "released" in orphan["message"]
