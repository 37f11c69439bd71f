"""drivers.openstack.placement against a real Placement (noauth2, sqlite): nested pGPU providers with VGPU, custom
GPU resource classes, traits, usages from real allocations, and the mismatch report."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from drivers.openstack import (
    ExpectedHost,
    ExpectedUsage,
    PlacementReader,
    compare,
    flavor_capacity,
    flavor_from_specs,
)

pytestmark = pytest.mark.integration
MV = "1.39"


def _ok(resp: Any, *codes: int) -> Any:
    assert resp.status_code in (codes or (200,)), f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text}"
    return resp


class Fleet:
    """Builds providers the way nova-compute reports them (through the same SDK adapter the reader uses)."""

    def __init__(self, conn: Any) -> None:
        self.pl = conn.placement

    def provider(self, name: str, parent: str | None = None) -> str:
        rp = str(uuid.uuid4())
        body: dict[str, Any] = {"name": name, "uuid": rp}
        if parent:
            body["parent_provider_uuid"] = parent
        _ok(self.pl.post("/resource_providers", json=body, microversion=MV), 200)
        return rp

    def generation(self, rp: str) -> int:
        return int(_ok(self.pl.get(f"/resource_providers/{rp}", microversion=MV)).json()["generation"])

    def inventory(self, rp: str, **inv: dict[str, Any]) -> None:
        body = {"resource_provider_generation": self.generation(rp), "inventories": inv}
        _ok(self.pl.put(f"/resource_providers/{rp}/inventories", json=body, microversion=MV))

    def traits(self, rp: str, *traits: str) -> None:
        for t in traits:
            if t.startswith("CUSTOM_"):
                _ok(self.pl.put(f"/traits/{t}", microversion=MV), 201, 204)
        body = {"traits": list(traits), "resource_provider_generation": self.generation(rp)}
        _ok(self.pl.put(f"/resource_providers/{rp}/traits", json=body, microversion=MV))

    def resource_class(self, rc: str) -> None:
        _ok(self.pl.put(f"/resource_classes/{rc}", microversion=MV), 201, 204)

    def allocate(self, allocations: dict[str, dict[str, int]]) -> str:
        consumer = str(uuid.uuid4())
        body = {
            "allocations": {rp: {"resources": res} for rp, res in allocations.items()},
            "project_id": str(uuid.uuid4()),
            "user_id": str(uuid.uuid4()),
            "consumer_generation": None,
            "consumer_type": "INSTANCE",
        }
        _ok(self.pl.put(f"/allocations/{consumer}", json=body, microversion=MV), 204)
        return consumer


def _vgpu_host(fleet: Fleet, name: str) -> tuple[str, list[str]]:
    root = fleet.provider(name)
    fleet.inventory(root, VCPU={"total": 64, "max_unit": 64}, MEMORY_MB={"total": 512000, "max_unit": 512000})
    gpus = []
    for i in range(2):
        child = fleet.provider(f"{name}_pci_0000_8{i}_00_0", parent=root)
        fleet.inventory(child, VGPU={"total": 8, "max_unit": 8})
        fleet.traits(child, "CUSTOM_GPU_L40S", "CUSTOM_VGPU_L40S_6C")
        gpus.append(child)
    return root, gpus


def test_nested_vgpu_custom_classes_traits_usages_and_mismatches(
    placement_conn: Any, placement_reader: PlacementReader
) -> None:
    fleet = Fleet(placement_conn)
    tag = uuid.uuid4().hex[:6]
    vgpu_host, gpus = _vgpu_host(fleet, f"cmp-vgpu-{tag}")
    pci_host = fleet.provider(f"cmp-pci-{tag}")
    fleet.inventory(pci_host, VCPU={"total": 32, "max_unit": 32})
    fleet.resource_class("CUSTOM_GPU_A100_80GB")
    pci_children = []
    for i in range(2):
        child = fleet.provider(f"cmp-pci-{tag}_0000:81:0{i}.0", parent=pci_host)
        fleet.inventory(child, CUSTOM_GPU_A100_80GB={"total": 1, "max_unit": 1})
        fleet.traits(child, "CUSTOM_GPU_A100")
        pci_children.append(child)
    fleet.allocate({gpus[0]: {"VGPU": 3}, vgpu_host: {"VCPU": 4}})
    fleet.allocate({pci_children[1]: {"CUSTOM_GPU_A100_80GB": 1}})

    view = placement_reader.view()
    tree = view.tree(vgpu_host)
    assert {p.uuid for p in tree} == {vgpu_host, *gpus}
    assert {p.uuid for p in view.children(vgpu_host)} == set(gpus)
    child = view.by_uuid(gpus[0])
    assert child.parent_uuid == vgpu_host and child.root_uuid == vgpu_host
    assert child.inventories["VGPU"].total == 8 and child.usages == {"VGPU": 3}
    assert child.traits == ["CUSTOM_GPU_L40S", "CUSTOM_VGPU_L40S_6C"]
    usage = view.host_gpu_usage()
    assert usage[f"cmp-vgpu-{tag}"]["VGPU"].model_dump() == {"capacity": 16, "used": 3}
    assert "VCPU" not in usage[f"cmp-vgpu-{tag}"]
    assert usage[f"cmp-pci-{tag}"]["CUSTOM_GPU_A100_80GB"].model_dump() == {"capacity": 2, "used": 1}
    assert placement_reader.view(in_tree=pci_host).roots()[0].uuid == pci_host

    # Capacity behind flavors: vGPU flavor with the type trait, and a PCI alias reported to Placement.
    vgpu_flavor = flavor_from_specs("f1", "g.l40s-6c", {"resources:VGPU": "1", "trait:CUSTOM_VGPU_L40S_6C": "required"})
    assert vgpu_flavor is not None and vgpu_flavor.vgpu is not None
    assert (vgpu_flavor.model, vgpu_flavor.vgpu.framebuffer_mib, vgpu_flavor.vgpu.max_instances) == ("L40S", 6144, 8)
    assert flavor_capacity(vgpu_flavor, view.model_copy(update={"providers": tree})) == 13
    two = flavor_from_specs("f2", "g.l40s-6c.x2", {"resources:VGPU": "2", "trait:CUSTOM_VGPU_L40S_6C": "required"})
    assert two is not None and flavor_capacity(two, view.model_copy(update={"providers": tree})) == 6  # 5//2 + 8//2
    pci_flavor = flavor_from_specs("f3", "p.a100", {"pci_passthrough:alias": "a100:1"})
    assert pci_flavor is not None
    pci_tree = view.model_copy(update={"providers": view.tree(pci_host)})
    assert flavor_capacity(pci_flavor, pci_tree) is None  # Placement alone cannot tell (legacy PCI tracking)
    assert flavor_capacity(pci_flavor, pci_tree, {"a100": "CUSTOM_GPU_A100_80GB"}) == 1

    # gpufabric's view: agrees on the vGPU host except the usage; thinks the PCI host has 4 GPUs; knows a host that
    # Placement does not; expects a trait that is missing.
    expected = [
        ExpectedHost(
            host=f"cmp-vgpu-{tag}",
            resources={"VGPU": ExpectedUsage(capacity=16, used=4)},
            traits=["CUSTOM_GPU_L40S", "CUSTOM_NVLINK"],
        ),
        ExpectedHost(host=f"cmp-pci-{tag}", resources={"CUSTOM_GPU_A100_80GB": ExpectedUsage(capacity=4, used=1)}),
        ExpectedHost(host=f"cmp-ghost-{tag}", resources={"VGPU": ExpectedUsage(capacity=8)}),
    ]
    mismatches = [m for m in compare(view, expected) if tag in m.host]
    kinds = sorted((m.host.split("-")[1], m.kind, m.resource_class or m.trait) for m in mismatches)
    assert kinds == [
        ("ghost", "missing_provider", None),
        ("pci", "capacity", "CUSTOM_GPU_A100_80GB"),
        ("vgpu", "missing_trait", "CUSTOM_NVLINK"),
        ("vgpu", "used", "VGPU"),
    ], mismatches
    used = next(m for m in mismatches if m.kind == "used")
    assert (used.expected, used.actual) == (4, 3) and "used 3 in Placement, 4 in gpufabric" in used.message

    # A tree with GPU inventory that gpufabric does not know is reported too.
    unknown = [m for m in compare(view, expected[:1]) if m.host == f"cmp-pci-{tag}"]
    assert [m.kind for m in unknown] == ["unexpected_provider"]
    assert not [m for m in compare(view, expected[:1], report_unexpected=False) if m.host == f"cmp-pci-{tag}"]
