"""The MIG scorer's decisions on small hand-made fleets (``mig.host_cost``, through the engine where it can be).

Each case names the placement the scorer takes and what a later request then still finds; a change to the scorer
that gives up one of these shows here before it shows as a lower figure in bench/mig_packing.
"""

from __future__ import annotations

from controller.placement import Decision, Engine, MigSlot, mig
from tests.support.placement_fleet import mig_host

A100 = "A100-40GB"


def host_with(*layouts: list[tuple[str, int, int]], hid: str = "m") -> Engine:
    """One on-demand MIG host with one A100 per layout; every instance listed is claimed (in use)."""
    h = mig_host(hid, A100, len(layouts), [])
    for d, layout in zip(h.devices, layouts, strict=True):
        d.mig_instances = [
            MigSlot(profile=p, start=s, size=z, uuid=f"MIG-{d.uuid}-{s}", claimed_by="busy") for p, s, z in layout
        ]
    return Engine([h])


def place(e: Engine, profile: str) -> tuple[int, int]:
    """Decide and claim one instance of ``profile``: (GPU index, placement start)."""
    d = e.decide({"slices": [{"kind": "mig", "profile": profile}]}, "t")
    assert isinstance(d, Decision), d
    e.claim(d)
    (a,) = d.allocations
    assert a.placement is not None
    return int(a.device_uuid.rsplit("-", 1)[1]), a.placement[0]


def served(e: Engine, profile: str) -> bool:
    return isinstance(e.decide({"slices": [{"kind": "mig", "profile": profile}]}, "t"), Decision)


def test_a_small_instance_goes_next_to_others_and_the_empty_gpu_stays_whole_for_a_7g() -> None:
    e = host_with([("3g.20gb", 4, 4)], [])
    assert place(e, "1g.5gb")[0] == 0
    assert served(e, "7g.40gb")


def test_the_start_keeps_the_low_half_free_for_a_4g() -> None:
    """On an empty A100 a 1g.5gb goes to slice 5: not 0-3 (the only 4g place), not 6 (which strands slice 7)."""
    e = host_with([], [("7g.40gb", 0, 8)])
    assert place(e, "1g.5gb") == (0, 5)
    assert served(e, "4g.20gb")
    assert place(e, "1g.10gb") == (0, 6)  # and slice 7 was not stranded


def test_the_hosts_last_3g_place_is_kept() -> None:
    """A 1g.5gb sits at slice 0, so the 3g at 4 is the host's last 3g place. A 1g.10gb at 6 (what fragmentation
    alone prefers: it keeps 2-3 for a 2g) would take it; the scorer puts it at 2."""
    e = host_with([("1g.5gb", 0, 1)], [("7g.40gb", 0, 8)])
    assert place(e, "1g.10gb") == (0, 2)
    assert served(e, "3g.20gb")


def test_the_hosts_last_2g_place_is_kept_even_at_the_price_of_a_stranded_slice() -> None:
    """A 3g holds 0-3: a 1g.5gb at 5 would leave no 2g place (2g starts at 0, 2, 4); at 6 it strands slice 7 but
    a 2g still fits at 4. A refused profile costs more than a stranded slice."""
    e = host_with([("3g.20gb", 0, 4)], [("7g.40gb", 0, 8)])
    assert place(e, "1g.5gb") == (0, 6)
    assert served(e, "2g.10gb")


def test_a_place_left_on_another_host_is_not_guarded() -> None:
    """The same 1g.10gb as above, told that another host can still create a 3g: nothing is lost in the fleet, so
    fragmentation decides (6-7, keeping 2-3 for a 2g)."""
    layout: mig.Layout = ((0, 1, "1g.5gb"),)
    assert mig.best_placement(A100, layout, "1g.10gb")[1:] == (2, 2)  # type: ignore[index]
    host = mig.HostPlaces([(A100, layout)], lambda model, profile: profile == "3g.20gb")
    elsewhere = host.outside(A100, layout)
    assert mig.best_placement(A100, layout, "1g.10gb", elsewhere)[1:] == (6, 2)  # type: ignore[index]


def test_a_placement_is_charged_only_for_profiles_no_gpu_can_create_any_more() -> None:
    empty: mig.Layout = ()
    # A 1g.5gb at 0 takes this GPU's 7g and 4g places (the 3g at 4 remains).
    assert mig.last_places_taken(A100, empty, "1g.5gb", 0, 1) == ("4g.20gb", "7g.40gb")
    per_lost = mig.host_cost(A100, empty, "1g.5gb", 0, 1) - mig.placement_cost(A100, empty, "1g.5gb", 0, 1)
    assert per_lost > 0
    # With a second empty GPU on the host both profiles keep a place: only placement_cost remains.
    two = mig.HostPlaces([(A100, empty), (A100, empty)], lambda model, profile: False).outside(A100, empty)
    assert mig.host_cost(A100, empty, "1g.5gb", 0, 1, two) == mig.placement_cost(A100, empty, "1g.5gb", 0, 1)
    # Another host with a 7g place leaves only the 4g lost: half the charge.
    seven = mig.HostPlaces([(A100, empty)], lambda model, profile: profile == "7g.40gb").outside(A100, empty)
    assert mig.host_cost(A100, empty, "1g.5gb", 0, 1, seven) == per_lost // 2 + mig.placement_cost(
        A100, empty, "1g.5gb", 0, 1
    )


def test_the_engine_tells_the_scorer_what_other_hosts_can_still_create() -> None:
    """Host a (region r1) as in the 3g case; host b (region r2) is empty. Asked for r1, the 1g.10gb lands on a, and
    because b can still create a 3g it lands where fragmentation prefers (6-7), not at 2 as when a is alone."""
    a = mig_host("a", A100, 1, [], region="r1", az="r1a")
    a.devices[0].mig_instances = [MigSlot("1g.5gb", 0, 1, "MIG-a-0", claimed_by="busy")]
    b = mig_host("b", A100, 1, [], region="r2", az="r2a")
    e = Engine([a, b])
    d = e.decide({"regions": ["r1"], "slices": [{"kind": "mig", "profile": "1g.10gb"}]}, "t")
    assert isinstance(d, Decision), d
    assert [(x.host_id, x.placement) for x in d.allocations] == [("a", (6, 2))]
    alone = host_with([("1g.5gb", 0, 1)])
    assert place(alone, "1g.10gb") == (0, 2)
