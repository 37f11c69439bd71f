"""MIG: reuse free instances, or create on demand where it fragments least."""

from __future__ import annotations

from controller.placement import Decision, Engine, MigCreate, Refusal, mig
from tests.support.placement_fleet import mig_host


def decide(e: Engine, body: dict) -> Decision:
    d = e.decide(body, "t")
    assert isinstance(d, Decision), d
    return d


def test_free_existing_instance_is_used_before_creating_one() -> None:
    h = mig_host("m", "A100-40GB", 1, [("3g.20gb", 0, 4), ("3g.20gb", 4, 4)], on_demand=True)
    e = Engine([h])
    d = decide(e, {"slices": [{"kind": "mig", "profile": "3g.20gb"}]})
    (a,) = d.allocations
    assert not a.create and a.mig_uuid is not None and d.actions == []
    e.claim(d)
    d2 = decide(e, {"slices": [{"kind": "mig", "profile": "3g.20gb"}]})
    assert d2.allocations[0].mig_uuid != a.mig_uuid
    e.claim(d2)
    # Both taken and no room to create a third: refused on capacity.
    r = e.decide({"slices": [{"kind": "mig", "profile": "3g.20gb"}]}, "t")
    assert isinstance(r, Refusal)
    assert {c.name for c in r.funnel.filters if c.removed_hosts} == {"capacity"}


def test_on_demand_creation_returns_an_action_and_release_destroys_it() -> None:
    e = Engine([mig_host("m", "H100-80GB", 1, [], on_demand=True)])
    d = decide(e, {"slices": [{"kind": "mig", "profile": "3g.40gb"}]})
    (a,) = d.allocations
    assert a.create and a.mig_uuid is None and a.placement is not None
    (act,) = d.actions
    assert act == MigCreate("m", "GPU-m-0", "3g.40gb", 9, a.placement[0], a.placement[1])
    c = e.claim(d)
    # The pending instance is held: the index offers only the other half now.
    assert e.index.free("m", ("mig+", "H100-80GB", "3g.40gb")) == 1
    destroy = e.release(c)
    assert [(x.profile, x.start, x.size) for x in destroy] == [("3g.40gb", a.placement[0], 4)]
    assert e.index.hosts["m"].devices[0].mig_instances == []
    assert e.index.free("m", ("mig+", "H100-80GB", "3g.40gb")) == 2


def test_pool_without_on_demand_mig_is_refused_with_the_reason() -> None:
    e = Engine([mig_host("m", "A100-40GB", 1, [("1g.5gb", 0, 1)], on_demand=False)])
    r = e.decide({"slices": [{"kind": "mig", "profile": "2g.10gb"}]}, "t")
    assert isinstance(r, Refusal)
    assert "does not allow on-demand MIG" in next(c for c in r.funnel.filters if c.name == "profile").examples[0]


def test_least_fragmentation_where_first_fit_fragments() -> None:
    """1g.5gb then 4g.20gb on one empty A100-40GB: first-fit puts the 1g at slice 0 and blocks the 4g."""
    model = "A100-40GB"
    # First-fit baseline:
    layout: mig.Layout = ()
    s, n = mig.first_placement(model, layout, "1g.5gb")  # type: ignore[misc]
    assert s == 0
    layout = mig.add(layout, s, n, "1g.5gb")
    assert mig.first_placement(model, layout, "4g.20gb") is None
    # The engine:
    e = Engine([mig_host("m", model, 1, [], on_demand=True)])
    d1 = decide(e, {"slices": [{"kind": "mig", "profile": "1g.5gb"}]})
    # The high half (keeping the low half for a 4g), but not slice 6, which would leave slice 7 dead.
    assert d1.allocations[0].placement == (5, 1)
    e.claim(d1)
    d2 = decide(e, {"slices": [{"kind": "mig", "profile": "4g.20gb"}]})
    assert d2.allocations[0].placement == (0, 4)
    e.claim(d2)


def test_small_instances_go_to_the_partly_used_gpu_keeping_an_empty_one_whole() -> None:
    h = mig_host("m", "A100-40GB", 2, [], on_demand=True)
    h.devices[1].mig_instances = []
    e = Engine([h])
    e.claim(decide(e, {"slices": [{"kind": "mig", "profile": "3g.20gb"}]}))
    d = decide(e, {"slices": [{"kind": "mig", "profile": "1g.5gb"}]})
    first = e.claims[next(iter(e.claims))].allocations[0].device_uuid
    assert d.allocations[0].device_uuid == first
    e.claim(d)
    d7 = decide(e, {"slices": [{"kind": "mig", "profile": "7g.40gb"}]})
    assert d7.allocations[0].device_uuid != first


def test_mig_by_memory_picks_the_smallest_profile_that_fits() -> None:
    e = Engine([mig_host("m", "H100-80GB", 1, [], on_demand=True)])
    d = decide(e, {"slices": [{"kind": "mig", "min_memory_gib": 18}]})
    assert d.allocations[0].profile in ("1g.20gb",)


def test_several_instances_on_one_host_do_not_overlap() -> None:
    e = Engine([mig_host("m", "A100-40GB", 1, [], on_demand=True)])
    d = decide(e, {"slices": [{"kind": "mig", "profile": "2g.10gb", "count": 3}]})
    spans = sorted(a.placement for a in d.allocations if a.placement)
    assert spans == [(0, 2), (2, 2), (4, 2)]
    e.claim(d)
    d = decide(e, {"slices": [{"kind": "mig", "profile": "1g.5gb"}]})
    assert d.allocations[0].placement == (6, 1)
    e.claim(d)
    assert isinstance(e.decide({"slices": [{"kind": "mig", "profile": "1g.5gb"}]}, "t"), Refusal)


def _served(e: Engine, profiles: list[str]) -> int:
    n = 0
    for p in profiles:
        d = e.decide({"slices": [{"kind": "mig", "profile": p}]}, "t")
        if not isinstance(d, Decision):
            break
        e.claim(d)
        n += 1
    return n


def test_no_dead_slice_keeps_room_for_a_1g10gb_where_the_old_choice_refused_it() -> None:
    """1g.5gb, 1g.5gb, 4g.20gb, 1g.10gb on one A100-40GB.

    The former choice (least drop in free placements) put the 1g.5gbs at slices 6 and 5: slice 7 was left free
    but unusable, and the 1g.10gb (placements 0, 2, 4, 6, two slices each) was refused. Counting dead slices
    puts them at 5 and 4, and the 1g.10gb takes 6-7.
    """
    seq = ["1g.5gb", "1g.5gb", "4g.20gb", "1g.10gb"]
    e = Engine([mig_host("m", "A100-40GB", 1, [], on_demand=True)])
    assert _served(e, seq) == 4
    layout = e.index.hosts["m"].devices[0].mig_layout()
    assert layout == ((0, 4, "4g.20gb"), (4, 1, "1g.5gb"), (5, 1, "1g.5gb"), (6, 2, "1g.10gb"))
    assert mig.dead_slices("A100-40GB", layout) == 0
    assert mig.dead_slices("A100-40GB", ((6, 1, "1g.5gb"),)) == 1


def test_placement_cost_is_lexicographic_empty_gpu_then_dead_slices_then_potential() -> None:
    m = "A100-40GB"
    used: mig.Layout = ((4, 4, "3g.20gb"),)
    # Any placement on an empty GPU costs more than the worst one on a GPU already in use.
    worst_used = max(mig.placement_cost(m, used, "1g.5gb", s, 1) for s, _ in mig.free_placements(m, used, "1g.5gb"))
    best_empty = min(mig.placement_cost(m, (), "1g.5gb", s, 1) for s in range(7))
    assert worst_used < best_empty
    # On one GPU, a dead slice outweighs any drop in potential.
    assert mig.placement_cost(m, (), "1g.5gb", 6, 1) > mig.placement_cost(m, (), "1g.5gb", 0, 1)
    assert mig.best_placement(m, (), "1g.5gb") == (mig.host_cost(m, (), "1g.5gb", 5, 1), 5, 1)
