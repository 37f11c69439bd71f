from __future__ import annotations

import pytest

from drivers.gpus.catalog import go_round, load_catalog, mig_profile_name

CAT = load_catalog()
MIG_PRODUCTS = [p.model for p in CAT.mig_capable()]


def test_go_round_halves_away_from_zero() -> None:
    assert go_round(70.5) == 71
    assert go_round(22.5) == 23
    assert round(70.5) == 70  # why Python's round is wrong here


@pytest.mark.parametrize("model", MIG_PRODUCTS)
def test_every_profile_name_reproduces(model: str) -> None:
    prod = CAT.product(model)
    for p in prod.mig_profiles:
        assert mig_profile_name(p.memory_mib, prod.memory_mib, p.slices, None, p.attrs) == p.name


@pytest.mark.parametrize("model", MIG_PRODUCTS)
def test_tables_self_consistent(model: str) -> None:
    prod = CAT.product(model)
    ids = [p.profile_id for p in prod.mig_profiles]
    assert len(ids) == len(set(ids))
    for p in prod.mig_profiles:
        assert p.placements and all(s + z <= prod.memory_slices for s, z in p.placements)
        assert p.max_instances <= len(p.placements)
        assert p.memory_mib < prod.memory_mib
        assert prod.ci_profiles_for(p), p.name
        assert p.sm_count <= prod.sm_total


def test_lookup_by_name_alias_model() -> None:
    assert CAT.product("NVIDIA A100-SXM4-40GB").model == "A100-40GB"
    assert CAT.product("a100-40gb").name == "NVIDIA A100-SXM4-40GB"
    nvl = CAT.product("NVIDIA H200 NVL")
    assert nvl.name == "NVIDIA H200 NVL" and nvl.pci_device_id == 0x233B10DE
    with pytest.raises(KeyError, match=r"known: .*H100-80GB"):
        CAT.product("RTX 9090")


def test_ci_names() -> None:
    prod = CAT.product("A100-40GB")
    gi = prod.profile_by_name("3g.20gb")
    assert gi is not None
    names = [prod.ci_name(gi, c) for c in prod.ci_profiles_for(gi)]
    assert names == ["1c.3g.20gb", "2c.3g.20gb", "3g.20gb"]
    assert [prod.ci_sm_count(gi, c) for c in prod.ci_profiles_for(gi)] == [14, 28, 42]
