"""Pure parts of the Cyborg path: the agent driver's reading of the inventory, device profile names and groups,
discovery from Placement + deployables, the ARQ checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.backends.contract import LeaseStatus, ProvisionFailed
from controller.backends.cyborg.backend import arqs_ready, flavor_name, model_trait, wants
from controller.backends.cyborg.check import orphan_arqs
from controller.backends.cyborg.config import CyborgConfig
from controller.backends.cyborg.discovery import cyborg_docs
from controller.placement import Allocation
from drivers.cyborg.devices import InventoryError, cyborg_gpus, pci_address, pci_ids, read_inventory
from drivers.openstack import HostAggregate, PlacementView, ResourceProvider
from drivers.openstack.cyborg import Arq, Deployable, _attributes, profile_groups, profile_name
from drivers.openstack.placement import ProviderInventory


def _gpu(index: int, bus: str, health: str = "healthy", name: str = "NVIDIA A100 80GB PCIe") -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-{index}",
        "name": name,
        "pci": {"bus_id": bus, "device_id": "0x20B510DE"},
        "health": {"state": health},
    }


def _inventory(*gpus: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "gpufabric.inventory/v1", "host": {"hostname": "h"}, "gpus": list(gpus)}


def test_inventory_gpus_become_cyborg_devices_healthy_only() -> None:
    doc = _inventory(
        _gpu(1, "00000000:3B:00.0"), _gpu(0, "00000000:17:00.0"), _gpu(2, "00000000:5E:00.0", "quarantined")
    )
    gpus = cyborg_gpus(doc)
    assert [(g.address, g.vendor_id, g.product_id) for g in gpus] == [
        ("0000:17:00.0", "10de", "20b5"),
        ("0000:3b:00.0", "10de", "20b5"),
    ]
    assert gpus[0].traits == ("OWNER_CYBORG", "CUSTOM_NVIDIA_20B5", "CUSTOM_GPU_A100_80GB_PCIE")
    assert gpus[0].deployable_name("cmp-1") == "cmp-1_0000:17:00.0"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"schema_version": "other"}, "not a gpufabric.inventory/v1"),
        (_inventory(_gpu(0, "17:00")), "not a PCI address"),
        (_inventory({"index": 0, "name": "x", "uuid": "u"}), "lacks name, uuid or pci"),
    ],
)
def test_bad_inventories_are_refused_with_the_reason(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        cyborg_gpus(doc)


def test_read_inventory_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="has the gpufabric agent reported yet"):
        read_inventory(tmp_path / "inventory.json")
    (tmp_path / "inventory.json").write_text("{not json")
    with pytest.raises(InventoryError, match=r"inventory\.json"):
        read_inventory(tmp_path / "inventory.json")
    (tmp_path / "inventory.json").write_text(json.dumps(_inventory(_gpu(0, "0000:81:00.0"))))
    assert [g.address for g in read_inventory(tmp_path / "inventory.json")] == ["0000:81:00.0"]


def test_pci_helpers() -> None:
    assert pci_address("00000000:AF:00.1") == "0000:af:00.1"
    assert pci_ids("0x233010DE") == ("10de", "2330")
    with pytest.raises(InventoryError):
        pci_ids("zz")


def test_device_profiles_one_group_per_gpu() -> None:
    assert profile_name("A100-80GB", 2) == "gpufabric-a100-80gb-x2"
    assert flavor_name("A100-80GB", 2) == "gf-cyborg-a100-80gb-x2"
    groups = profile_groups("CUSTOM_GPU_A100_SXM4_80GB", 2)
    assert groups == [{"resources:PGPU": "1", "trait:CUSTOM_GPU_A100_SXM4_80GB": "required"}] * 2
    with pytest.raises(ValueError):
        profile_groups("T", 0)
    # The model trait the driver gives a GPU and the one the profile asks for are the same.
    assert model_trait("NVIDIA A100-SXM4-80GB") == "CUSTOM_GPU_A100_SXM4_80GB"
    assert cyborg_gpus(_inventory(_gpu(0, "0000:18:00.0", name="NVIDIA A100-SXM4-80GB")))[0].traits[2] == model_trait(
        "NVIDIA A100-SXM4-80GB"
    )


def test_deployable_attributes_parse_cyborgs_json_string() -> None:
    raw = '[{"rc": "PGPU"}, {"trait0": "OWNER_CYBORG"}, {"trait1": "CUSTOM_GPU_H100"}]'
    assert _attributes(raw) == {"rc": "PGPU", "trait0": "OWNER_CYBORG", "trait1": "CUSTOM_GPU_H100"}


def _alloc(host: str, kind: str = "gpu", model: str = "A100-80GB") -> Allocation:
    return Allocation(host_id=host, device_uuid="d", kind=kind, model=model)  # type: ignore[arg-type]


def test_wants_one_model_of_whole_gpus() -> None:
    assert wants("h", [_alloc("h"), _alloc("h"), _alloc("other")]) == (2, "A100-80GB")
    with pytest.raises(ProvisionFailed, match="whole GPUs of one model"):
        wants("h", [_alloc("h"), _alloc("h", model="H100")])


def _arq(uuid: str, state: str = "Bound", host: str | None = "h", instance: str | None = "srv") -> Arq:
    return Arq(uuid=uuid, state=state, device_profile_name="p", hostname=host, instance_uuid=instance)


def test_arqs_ready_needs_all_bound_on_the_host() -> None:
    assert arqs_ready([_arq("a"), _arq("b")], 2, "h")[0]
    assert not arqs_ready([_arq("a"), _arq("b", state="Initial", host=None)], 2, "h")[0]
    assert not arqs_ready([_arq("a", host="other"), _arq("b")], 2, "h")[0]
    assert not arqs_ready([_arq("a")], 2, "h")[0]


def test_orphan_arqs() -> None:
    arqs = [
        _arq("live", instance="s1"),
        _arq("done", instance="s2"),
        _arq("foreign", instance="s3"),
        _arq("x", instance=None),
    ]
    leases = {"L1": LeaseStatus("L1", "ready", live=True), "L2": LeaseStatus("L2", "released", live=False)}
    out = orphan_arqs(arqs, {"s1": "L1", "s2": "L2"}, leases)
    assert [(o["id"], o["lease_id"]) for o in out] == [("done", "L2"), ("foreign", None), ("x", None)]
    assert "released" in out[0]["message"] and "not a gpufabric server" in out[1]["message"]


def test_discovery_one_device_per_cyborg_deployable() -> None:
    inv = {"PGPU": ProviderInventory(total=1, max_unit=1)}
    view = PlacementView(
        providers=[
            ResourceProvider(uuid="root", name="cmp", root_uuid="root"),
            ResourceProvider(
                uuid="rp1",
                name="cmp_0000:18:00.0",
                parent_uuid="root",
                root_uuid="root",
                inventories=inv,
                traits=["OWNER_CYBORG", "CUSTOM_GPU_A100_SXM4_80GB"],
            ),
            # Not Cyborg's (no OWNER_CYBORG): left to the nova kind.
            ResourceProvider(uuid="rp2", name="cmp_pgpu", parent_uuid="root", root_uuid="root", inventories=inv),
        ]
    )
    deployables = [
        Deployable(
            uuid="d1",
            name="cmp_0000:18:00.0",
            rp_uuid="rp1",
            driver_name="GPUFABRIC",
            num_accelerators=1,
            attributes={},
        )
    ]
    config = CyborgConfig.model_validate(
        {
            "auth": {
                "method": "admin_token",
                "token": "t",
                "endpoints": {"compute": "http://n", "placement": "http://p", "accelerator": "http://c/accelerator"},
            },
            "controller_url": "https://gf",
            "image": "img",
        }
    )
    docs, skipped = cyborg_docs(config, view, {"cmp": True, "gone": True}, deployables)
    assert [(d.name, [x["uuid"] for x in d.devices]) for d in docs] == [("cmp", ["cyborg-d1"])]
    assert docs[0].devices[0]["model"] == "NVIDIA A100-SXM4-80GB"
    assert skipped == ["gone: no resource provider in Placement"]
    assert not set(docs[0].labels) & {"gpufabric.dev/az", "gpufabric.dev/aggregate"}

    # Aggregates list compute service hosts; the hypervisor "cmp" runs under service "svc-1".
    racks = [
        HostAggregate(name="rack-a", hosts=("svc-1",), availability_zone="az-1", metadata={}),
        HostAggregate(name="pod-x", hosts=("svc-1", "svc-2"), availability_zone=None, metadata={}),
    ]
    config = config.model_copy(update={"topology_layers": {"pod-x": 3}})
    docs, _ = cyborg_docs(config, view, {"cmp": True}, deployables, racks, {"cmp": "svc-1"})
    assert docs[0].labels.items() >= {
        ("gpufabric.dev/az", "az-1"),
        ("gpufabric.dev/aggregate", "rack-a"),
        ("gpufabric.dev/network-node-layer-3", "pod-x"),
    }


def test_config_needs_the_cyborg_endpoint_without_a_catalog() -> None:
    with pytest.raises(ValueError, match=r"endpoints\.accelerator"):
        CyborgConfig.model_validate(
            {
                "auth": {
                    "method": "admin_token",
                    "token": "t",
                    "endpoints": {"compute": "http://n", "placement": "http://p"},
                },
                "controller_url": "https://gf",
                "image": "img",
            }
        )
