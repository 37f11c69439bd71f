"""The bounds the shared mig-parted models put on counts and names never refuse what a real GPU offers."""

from __future__ import annotations

from drivers.contract.mig import (
    MAX_MIG_INSTANCES_PER_GPU,
    MAX_PROFILE_NAME,
    check_profile_name,
    mig_config_from_document,
)
from drivers.gpus.catalog import load_catalog


def test_no_catalog_gpu_holds_more_instances_than_the_bound() -> None:
    products = load_catalog().mig_capable()
    assert products
    for product in products:
        assert product.max_mig_instances <= MAX_MIG_INSTANCES_PER_GPU, product.name
        assert all(p.max_instances <= MAX_MIG_INSTANCES_PER_GPU for p in product.mig_profiles), product.name
    assert max(p.max_mig_instances for p in products) == MAX_MIG_INSTANCES_PER_GPU


def test_every_catalog_profile_name_passes_the_shared_grammar() -> None:
    for product in load_catalog().mig_capable():
        for gi in product.mig_profiles:
            names = [gi.name, *(product.ci_name(gi, ci) for ci in product.ci_profiles_for(gi))]
            for name in names:
                assert len(name) <= MAX_PROFILE_NAME and check_profile_name(name) == name


def test_a_full_gpu_of_the_smallest_profile_is_accepted() -> None:
    for product in load_catalog().mig_capable():
        smallest = min(product.mig_profiles, key=lambda p: (p.slices, p.memory_mib))
        doc = {
            "version": "v1",
            "mig-configs": {
                "full": [
                    {"devices": "all", "mig-enabled": True, "mig-devices": {smallest.name: smallest.max_instances}}
                ]
            },
        }
        assert mig_config_from_document(doc).configs["full"][0].mig_devices == {smallest.name: smallest.max_instances}
