"""vGPU placement on data-center GPUs: MIG-backed types on GPU instances, time-sliced types in equal-size mode."""

from __future__ import annotations

from typing import Any

from controller.placement import Decision, Engine, Refusal
from tests.support.placement_fleet import a100_vgpu_host, mig_host

BALANCED = [("3g.20gb", 4, 4), ("2g.10gb", 0, 2), ("1g.5gb", 2, 1)]


def vgpu(vtype: str, count: int = 1) -> dict[str, Any]:
    return {"slices": [{"kind": "vgpu", "vgpu_type": vtype, "count": count}]}


def claim(e: Engine, body: dict[str, Any]) -> Decision:
    d = e.decide(body, "t")
    assert isinstance(d, Decision), getattr(d, "detail", d)
    e.claim(d)
    return d


def refusal_examples(e: Engine, body: dict[str, Any]) -> list[str]:
    r = e.decide(body, "t", explain=True)
    assert isinstance(r, Refusal)
    return [x for f in r.extensions()["filters"] for x in f.get("examples", [])]


def test_a_mig_backed_vgpu_occupies_exactly_one_gpu_instance_of_its_profile() -> None:
    e = Engine([a100_vgpu_host("a", 1, BALANCED)])
    d = claim(e, vgpu("A100-3-20C"))
    (a,) = d.allocations
    assert (a.kind, a.vgpu_type, a.profile, a.placement, a.units) == ("vgpu", "A100-3-20C", "3g.20gb", (4, 4), 1)
    assert a.mig_uuid == "MIG-GPU-a-0-4"
    dev = e.index.hosts["a"].devices[0]
    held = [(m.profile, m.start, m.vgpu_type) for m in dev.mig_instances if m.claimed_by]
    assert held == [("3g.20gb", 4, "A100-3-20C")]
    # The only 3g.20gb instance is taken: a second one is refused with the reason, and nothing else moved.
    assert "a GPU 0: no free 3g.20gb GPU instance for MIG-backed A100-3-20C" in refusal_examples(e, vgpu("A100-3-20C"))
    # Mixed MIG-backed types share the GPU (NVIDIA's mixed MIG-backed configuration): one per instance.
    mixed = claim(
        e, {"slices": [{"kind": "vgpu", "vgpu_type": "A100-2-10C"}, {"kind": "vgpu", "vgpu_type": "A100-1-5C"}]}
    )
    assert sorted(x.placement for x in mixed.allocations if x.placement) == [(0, 2), (2, 1)]


def test_two_leases_never_share_a_gpu_instance_and_release_frees_it() -> None:
    e = Engine([a100_vgpu_host("a", 1, [("3g.20gb", 0, 4), ("3g.20gb", 4, 4)])])
    first = claim(e, vgpu("A100-3-20C"))
    second = claim(e, vgpu("A100-3-20C"))
    places = {first.allocations[0].placement, second.allocations[0].placement}
    assert places == {(0, 4), (4, 4)}
    assert isinstance(e.decide(vgpu("A100-3-20C"), "t"), Refusal)
    for cid in sorted(e.claims):
        e.release(cid)
    dev = e.index.hosts["a"].devices[0]
    assert dev.is_idle() and all(m.vgpu_type is None for m in dev.mig_instances)
    assert claim(e, vgpu("A100-3-20C", 2)).allocations[0].vgpu_type == "A100-3-20C"


def test_a_gpu_runs_time_sliced_or_mig_backed_vgpu_never_both() -> None:
    e = Engine([a100_vgpu_host("sliced", 1, None), a100_vgpu_host("backed", 1, BALANCED)])
    # Each kind of type lands only on the GPU in the matching mode.
    assert claim(e, vgpu("A100-4C")).allocations[0].host_id == "sliced"
    assert claim(e, vgpu("A100-1-5C")).allocations[0].host_id == "backed"
    examples = refusal_examples(e, vgpu("A100-7-40C"))
    assert "sliced GPU 0: runs time-sliced vGPU (MIG off): a MIG-backed A100-7-40C needs a GPU in MIG mode" in examples
    examples = refusal_examples(e, vgpu("A100-20C"))
    assert "backed GPU 0: in MIG mode (MIG-backed vGPU): a time-sliced A100-20C needs a GPU with MIG off" in examples


def test_time_sliced_types_of_different_sizes_never_share_a_gpu() -> None:
    e = Engine([a100_vgpu_host("a", 1, None)])
    claim(e, vgpu("A100-4C", 3))
    examples = refusal_examples(e, vgpu("A100-10C"))
    assert "a GPU 0: runs time-sliced A100-4C: A100-10C would mix vGPU sizes on one GPU (equal-size mode)" in examples
    claim(e, vgpu("A100-4C", 7))  # the same size: up to the type's 10
    assert "a GPU 0: all 10 A100-4C vGPUs taken" in refusal_examples(e, vgpu("A100-4C"))


def test_vgpu_by_memory_takes_the_smallest_fitting_mig_backed_type() -> None:
    e = Engine([a100_vgpu_host("a", 1, BALANCED)])
    d = claim(e, {"slices": [{"kind": "vgpu", "model": "A100", "min_memory_gib": 8, "count": 2}]})
    assert sorted((a.vgpu_type, a.placement) for a in d.allocations) == [
        ("A100-2-10C", (0, 2)),
        ("A100-3-20C", (4, 4)),
    ]


def test_a_mig_slice_never_lands_on_a_vgpu_gpu_and_a_vgpu_never_on_a_mig_gpu() -> None:
    e = Engine([mig_host("m", "A100-40GB", 1, BALANCED, on_demand=False), a100_vgpu_host("v", 1, BALANCED)])
    assert claim(e, {"slices": [{"kind": "mig", "profile": "3g.20gb"}]}).allocations[0].host_id == "m"
    assert claim(e, vgpu("A100-3-20C")).allocations[0].host_id == "v"
    assert isinstance(e.decide({"slices": [{"kind": "mig", "profile": "3g.20gb"}]}, "t"), Refusal)
    assert isinstance(e.decide(vgpu("A100-3-20C"), "t"), Refusal)


# --- from store rows, and what the store claims ---------------------------------------------------------------


def _row(mig_mode: str, vgpu: dict[str, Any], instances: list[tuple[str, int, int]] = ()) -> Any:  # type: ignore[assignment]
    from controller.store.models import Device, MigInstance

    row = Device(
        uuid="GPU-v0", index=0, model="NVIDIA A100-PCIE-40GB", memory_mib=40960, health="healthy",
        admin_state="active", mig_mode=mig_mode, slices=[], details={"vgpu": vgpu},
    )  # fmt: skip
    row.mig_instances = [
        MigInstance(
            gpu_instance_id=i,
            uuid=f"MIG-{s}",
            profile=p,
            profile_id=0,
            placement_start=s,
            placement_size=z,
            memory_mib=0,
            sm_count=0,
        )
        for i, (p, s, z) in enumerate(instances)
    ]
    return row


def _supported() -> list[dict[str, Any]]:
    from drivers.gpus.catalog import load_catalog

    types = load_catalog().product("NVIDIA A100-PCIE-40GB").vgpu_types
    return [
        {"name": f"NVIDIA {t.name}", "framebuffer_mib": t.framebuffer_mib, "max_instances": t.max_instances}
        for t in types
    ]


def test_a_vgpu_gpu_in_mig_mode_offers_mig_backed_types_on_its_gpu_instances() -> None:
    from controller.leases.fleet import to_placement_device

    d = to_placement_device(_row("enabled", {"supported": _supported()}, [("3g.20gb", 4, 4), ("2g.10gb", 0, 2)]))
    assert d.mode == "vgpu" and d.mig_backed_vgpu
    assert all(v.mig_profile for v in d.vgpu_types.values()) and "A100-3-20C" in d.vgpu_types
    assert [(m.profile, m.start, m.uuid) for m in d.mig_instances] == [("3g.20gb", 4, "MIG-4"), ("2g.10gb", 0, "MIG-0")]
    assert (d.vgpu_free("A100-3-20C"), d.vgpu_free("A100-2-10C"), d.vgpu_free("A100-1-5C")) == (1, 1, 0)
    # MIG off: the time-sliced types only, whatever else the report listed.
    off = to_placement_device(_row("disabled", {"supported": _supported()}))
    assert off.mode == "vgpu" and not off.mig_backed_vgpu and "A100-4C" in off.vgpu_types
    assert not any(v.mig_profile for v in off.vgpu_types.values())
    # Nova: Placement knows no GPU instances; the offer lists those the type needs.
    nova = {
        "supported": [{"name": "A100-3-20C", "framebuffer_mib": 20480, "max_instances": 2, "mig_profile": "3g.20gb"}],
        "gpu_instances": [{"profile": "3g.20gb", "start": 0, "size": 4}, {"profile": "3g.20gb", "start": 4, "size": 4}],
    }
    on_nova = to_placement_device(_row("disabled", nova))
    assert on_nova.mig_backed_vgpu and [(m.start, m.size) for m in on_nova.mig_instances] == [(0, 4), (4, 4)]


def test_a_mig_slice_and_a_mig_backed_vgpu_on_one_instance_claim_the_same_store_units() -> None:
    from controller.leases.claims import memory_slices
    from controller.placement import Allocation

    slice_ = Allocation("h", "GPU-0", "mig", "A100-40GB", 1, 0, "3g.20gb", (4, 4), "MIG-4")
    backed = Allocation("h", "GPU-0", "vgpu", "A100-40GB", 1, 0, "3g.20gb", (4, 4), "MIG-4", vgpu_type="A100-3-20C")
    overlapping = Allocation("h", "GPU-0", "vgpu", "A100-40GB", 1, 0, "1g.5gb", (6, 1), None, vgpu_type="A100-1-5C")
    assert memory_slices(slice_) == memory_slices(backed) == ("mig:GPU-0", [4, 5, 6, 7])
    assert memory_slices(overlapping) == ("mig:GPU-0", [6])  # inside the 3g.20gb: the unique index refuses it
    assert memory_slices(Allocation("h", "GPU-0", "vgpu", "A16", 2, vgpu_type="A16-4C")) is None  # time-sliced
