"""Nova's names for the data-center vGPU types: traits, mdev type ids, the GPU instances of MIG-backed ones."""

from __future__ import annotations

import pytest

from controller.backends.nova.config import NovaConfig
from controller.backends.nova.discovery import _vgpu_offer
from drivers.gpus.catalog import load_catalog
from drivers.openstack import flavor_from_specs, gpu_instance_layout, product_for_label, vgpu_type_for

A100_SXM = load_catalog().product("A100-40GB")  # what the CUSTOM_GPU_A100 trait names


@pytest.mark.parametrize(
    ("name", "board", "vtype"),
    [
        ("CUSTOM_VGPU_A100_3_20C", "NVIDIA A100-PCIE-40GB", "A100-3-20C"),
        ("nvidia-476", "NVIDIA A100-PCIE-40GB", "A100-3-20C"),  # its mdev type id in the 510.47.03 vGPU manager
        ("CUSTOM_VGPU_A100X_1_5CME", "NVIDIA A100-SXM4-40GB", "A100X-1-5CME"),
        ("GRID A100D-7-80C", "NVIDIA A100 80GB PCIe", "A100D-7-80C"),
        ("CUSTOM_VGPU_A30_2_12C", "NVIDIA A30", "A30-2-12C"),
        ("H100XM-3-40C", "NVIDIA H100 80GB HBM3", "H100XM-3-40C"),
        ("CUSTOM_VGPU_H100_20C", "NVIDIA H100 PCIe", "H100-20C"),
    ],
)
def test_vgpu_type_names_nova_uses_find_the_board(name: str, board: str, vtype: str) -> None:
    found = vgpu_type_for(name)
    assert found is not None
    assert (found[0].name, found[1].name) == (board, vtype)


def test_a_model_trait_finds_the_types_of_every_board_of_that_model() -> None:
    found = vgpu_type_for("CUSTOM_VGPU_A100_3_20C", product_for_label("CUSTOM_GPU_A100"))
    assert found is not None and found[1].mig_profile == "3g.20gb"
    assert vgpu_type_for("CUSTOM_VGPU_A100_3_20C", load_catalog().product("A30")) is None
    assert vgpu_type_for("nvidia-99999") is None


def test_gpu_instances_for_mig_backed_vgpus() -> None:
    board, vtype = vgpu_type_for("A100-2-10C")  # type: ignore[misc]
    assert gpu_instance_layout(board, vtype, 3) == [{"profile": "2g.10gb", "start": s, "size": 2} for s in (0, 2, 4)]
    with pytest.raises(ValueError, match="at most 3 fit"):
        gpu_instance_layout(board, vtype, 4)
    with pytest.raises(ValueError, match="not a MIG-backed type"):
        gpu_instance_layout(board, vgpu_type_for("A100-20C")[1], 1)  # type: ignore[index]


def _config(**vgpu_types: str) -> NovaConfig:
    return NovaConfig.model_construct(vgpu_types=dict(vgpu_types))


def test_a_pgpu_offers_the_type_its_trait_names_with_the_gpu_instances_it_needs() -> None:
    offer, source = _vgpu_offer(_config(), A100_SXM, 2, ("CUSTOM_GPU_A100", "CUSTOM_VGPU_A100_3_20C"))
    assert source == "trait"
    assert (offer["name"], offer["mig_profile"], offer["max_instances"]) == ("A100-3-20C", "3g.20gb", 2)
    assert [(g["start"], g["size"]) for g in offer["gpu_instances"]] == [(0, 4), (4, 4)]
    # Placement's VGPU total above what the type allows: the type's maximum, on that many instances.
    offer, _ = _vgpu_offer(_config(A100="A100X-1-5C"), A100_SXM, 8)
    assert (offer["max_instances"], len(offer["gpu_instances"])) == (7, 7)


def test_without_a_type_the_catalog_default_is_time_sliced() -> None:
    # VGPU total 2 matches A100X-20C (time-sliced) and A100X-3-20C (MIG-backed): a pGPU nobody declared
    # MIG-backed is time-sliced.
    offer, source = _vgpu_offer(_config(), A100_SXM, 2)
    assert (offer["name"], source, offer.get("mig_profile")) == ("A100X-20C", "catalog", None)
    offer, source = _vgpu_offer(_config(A100="A100X-10C"), A100_SXM, 4)
    assert (offer["name"], source) == ("A100X-10C", "config")


def test_a_flavor_naming_a_mig_backed_type() -> None:
    flavor = flavor_from_specs(
        "9", "g1.a100.3-20c", {"resources:VGPU": "1", "trait:CUSTOM_VGPU_A100_3_20C": "required"}
    )
    assert flavor is not None and flavor.vgpu is not None
    assert (flavor.model, flavor.vgpu.type_name, flavor.vgpu.mig_profile) == ("A100-40GB", "A100-3-20C", "3g.20gb")
    assert flavor.vgpu.mdev_type == "nvidia-476"
