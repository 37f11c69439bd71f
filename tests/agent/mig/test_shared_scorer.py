"""One MIG decision: the agent's planner and the controller's placement engine decide with one scorer
(``drivers.gpus.mig_score``), on the same geometry, and so place one instance on one GPU alike.

The agent's side is what it runs on a host: the profile table read through the real pynvml API from the NVML
simulator, its geometry built from that table (``MigGeometry.from_profile_table``), and its search and planner.
The controller's side is ``controller.placement.mig`` on the catalog's model names. A change to either that makes
them disagree fails here.
"""

from __future__ import annotations

from collections import Counter

import pytest

from agent.mig.apply import observe
from agent.mig.model import ObservedCi, ObservedGi, ObservedGpu
from agent.mig.planner import plan_gpu
from agent.mig.search import best_placements, table_geometry
from controller.placement import mig
from drivers.contract.inventory import Placement
from drivers.contract.mig import MigConfigEntry
from drivers.gpus.catalog import load_catalog
from drivers.gpus.mig import MigGeometry, geometry
from drivers.nvml.session import open_nvml

# Every MIG-capable product of the catalog, MIG on, no instances: NVML lists their profile tables.
MIG_PRODUCTS = [p.model for p in load_catalog().mig_capable()]
SCORED = ["A100-40GB", "H100-80GB", "A30"]


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ObservedGpu]:
    """The simulated GPUs as the agent observes them, by catalog model."""
    spec = tmp_path_factory.mktemp("sim") / "every-mig-gpu.yaml"
    groups = "".join(f"  - product: {model}\n    mig: enabled\n" for model in MIG_PRODUCTS)
    spec.write_text(f"hostname: sim-every-mig-gpu\nmig_reset_required: false\ngpus:\n{groups}")
    with open_nvml(spec, spec.with_suffix(".state.json")):
        gpus = observe()
    assert [g.profiles is not None for g in gpus] == [True] * len(MIG_PRODUCTS)
    return dict(zip(MIG_PRODUCTS, gpus, strict=True))


def nvml_geometry(gpu: ObservedGpu) -> MigGeometry:
    geom = table_geometry(gpu.name, gpu.profiles or [])
    assert geom is not None
    return geom


def reachable_layouts(model: str) -> list[mig.Layout]:
    """Every layout a GPU of ``model`` can reach by creating instances (variants included), from empty."""
    geom = geometry(model)
    assert geom is not None
    seen: dict[mig.Layout, None] = {(): None}
    todo: list[mig.Layout] = [()]
    while todo:
        layout = todo.pop()
        for name in geom.profiles:
            for start, size in mig.free_placements(model, layout, name):
                after = mig.add(layout, start, size, name)
                if after not in seen:
                    seen[after] = None
                    todo.append(after)
    return sorted(seen)


def test_the_geometry_built_from_nvml_is_the_catalog_geometry(observed: dict[str, ObservedGpu]) -> None:
    for model, gpu in observed.items():
        nvml = nvml_geometry(gpu)
        catalog = geometry(model)
        assert catalog is not None and geometry(gpu.name).facts() == catalog.facts()  # type: ignore[union-attr]
        assert nvml.facts() == catalog.facts(), model
        assert (nvml.memory_slices, nvml.compute_slices) == (catalog.memory_slices, catalog.compute_slices)


def test_a_geometry_built_from_the_same_table_is_the_same_object(observed: dict[str, ObservedGpu]) -> None:
    """The scorer's caches are keyed by geometry: each planning run must hit the entries of the last."""
    gpu = observed["A100-40GB"]
    again = [p.model_copy() for p in gpu.profiles or []]
    assert table_geometry(gpu.name, again) is nvml_geometry(gpu)
    assert table_geometry(gpu.name, []) is None


@pytest.mark.parametrize("model", SCORED)
def test_the_agents_search_places_one_instance_where_the_controller_would(
    model: str, observed: dict[str, ObservedGpu]
) -> None:
    """On every layout the GPU can reach, for every profile: the agent's search given one instance to place picks
    the placement the controller's ``best_placement`` picks (or both find none)."""
    gpu = observed[model]
    geom = nvml_geometry(gpu)
    table = {p.name: p for p in gpu.profiles or []}
    compared = 0
    for layout in reachable_layouts(model):
        occupied = [(name, Placement(start=start, size=size)) for start, size, name in layout]
        for name, profile in table.items():
            theirs = mig.best_placement(model, layout, name)
            ours = best_placements([profile], occupied, geom)
            if theirs is None:
                assert ours is None, (model, layout, name)
                continue
            assert ours is not None, (model, layout, name)
            ((placed, at),) = ours
            assert (placed.name, at.start, at.size) == (name, theirs[1], theirs[2]), (model, layout, name)
            compared += 1
    assert compared > 1000 if model != "A30" else compared > 50


def _observed_instances(gpu: ObservedGpu, layout: mig.Layout) -> list[ObservedGi]:
    by_name = {p.name: p for p in gpu.profiles or []}
    return [
        ObservedGi(
            gpu_instance_id=i + 1,
            profile=name,
            profile_id=by_name[name].profile_id,
            placement=Placement(start=start, size=size),
            compute_instances=[ObservedCi(id=0, profile_id=0, slices=by_name[name].slices)],
        )
        for i, (start, size, name) in enumerate(layout)
    ]


@pytest.mark.parametrize("model", ["A100-40GB", "A30"])
def test_the_planner_creates_one_more_instance_where_the_controller_would(
    model: str, observed: dict[str, ObservedGpu]
) -> None:
    """Through the planner: a GPU holds a layout of base profiles and the operator's config asks for that layout
    plus one instance (not pinned by the controller). The planner keeps every instance and creates the new one
    where the controller would have placed it."""
    gpu = observed[model]
    geom = geometry(model)
    assert geom is not None
    base = [p.name for p in geom.profiles.values() if not p.is_variant]
    layouts = [layout for layout in reachable_layouts(model) if all(name in base for _, _, name in layout)]
    planned = 0
    for layout in layouts[:: 7 if model != "A30" else 1]:
        here = gpu.model_copy(update={"instances": _observed_instances(gpu, layout)})
        for name in base:
            theirs = mig.best_placement(model, layout, name)
            if theirs is None:
                continue
            want = Counter(n for _, _, n in layout) + Counter([name])
            entry = MigConfigEntry(devices="all", mig_enabled=True, mig_devices=dict(want))
            result = plan_gpu(here, entry)
            created = [(op.profile, op.placement) for op in result.operations if op.op == "create-gi"]
            assert created == [(name, Placement(start=theirs[1], size=theirs[2]))], (model, layout, name)
            assert not any(op.op.startswith("destroy") for op in result.operations)
            planned += 1
    assert planned > 100 if model != "A30" else planned > 20
