"""bench/mig_packing and its bounds: hand-checked values of the bounds, and the bench end to end on a tiny
configuration writing its figures where it is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.mig_packing import bound, exact, online_study, rollout
from bench.mig_packing.__main__ import PROFILE_WEIGHTS, RELEASE_P, main, make_trace, optimum_prefix, served_engine
from bench.mig_packing.tables import Tables, automorphisms
from bench.mig_packing.traces import _prefix_len, served_optimum

A100 = "A100-40GB"
W = PROFILE_WEIGHTS[A100]


def test_capacity_bound_stops_at_the_first_request_the_fleet_cannot_hold_whatever_the_placement() -> None:
    assert bound.capacity_bound(A100, 1, [("req", "4g.20gb"), ("req", "4g.20gb")]) == 1  # one low half per GPU
    seven = [("req", "1g.5gb")] * 7
    assert bound.capacity_bound(A100, 1, [*seven, ("req", "1g.10gb")]) == 7  # 8 compute slices > 7
    assert bound.capacity_bound(A100, 1, [*seven, ("rel", 0), ("req", "1g.10gb")]) == 8
    assert bound.capacity_bound(A100, 2, [("req", "7g.40gb"), ("req", "7g.40gb"), ("req", "1g.5gb")]) == 2


def test_the_online_optimum_of_two_events_by_hand() -> None:
    """Event 1 is a request (always served on an empty GPU). Event 2 is a request with probability 0.65, and the
    best first placement leaves room for it unless it is a 7g, or a 4g after a 4g, or anything after a 7g:
    P(fits) = (11/13 x 12/13) + (1/13 x 11/13) + (1/13 x 0) = 143/169, so V = 1 + 0.65 x 143/169 = 1.55."""
    assert bound.online_optimum(A100, 1, 1, W, RELEASE_P) == pytest.approx(1.0)
    assert bound.online_optimum(A100, 1, 2, W, RELEASE_P) == pytest.approx(1.55)


def test_no_policy_beats_the_online_optimum_and_the_scorer_beats_first_fit() -> None:
    best = bound.online_optimum(A100, 1, 16, W, RELEASE_P)
    scorer = bound.policy_value(A100, 1, 16, W, RELEASE_P, bound.scorer_choice)
    first_fit = bound.policy_value(A100, 1, 16, W, RELEASE_P, bound.first_fit_choice)
    assert first_fit < scorer <= best + 1e-9
    assert best > 0.99 * scorer


def test_the_clairvoyant_optimum_lies_between_the_engine_and_the_capacity_bound() -> None:
    trace = make_trace(A100, 48, 3)
    eng = served_engine(A100, 2, trace)
    opt, proven = optimum_prefix(A100, 2, trace, eng, 60.0)
    assert proven and eng <= opt <= bound.capacity_bound(A100, 2, trace)


def test_the_bench_runs_on_a_tiny_configuration(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--seeds", "2", "--gpus", "2", "--large-gpus", "8", "--online-gpus", "1", "--online-samples", "4"]
    argv += ["--sample-seeds", "2", "--exact-gpus", "1", "--mc-samples", "50", "--rollout-samples", "4"]
    argv += ["--block-seeds", "20", "--decisive-samples", "30"]
    argv += ["--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "mig_packing.json").read_text())
    assert result["command"] == "python -m bench.mig_packing " + " ".join(argv)
    assert len(result["runs"]) == 4
    for run in result["runs"]:
        assert run["engine"] <= run["optimum"] and run["first_fit"] <= run["optimum"]
        assert run["large_engine"] <= run["large_capacity_bound"]
    for summary in result["summary"].values():
        online = summary["online"]
        assert online["gpus"] == 1 and online["samples"] == 4
        assert online["engine"] <= online["online_optimum"]
        assert summary["large_bound_vs_first_fit"] >= summary["large_engine_vs_first_fit"]
        assert summary["sampled"]["seeds"] == "100-101"
        study = summary["study"]
        assert study["exact"]["gpus"] == 1 and study["rollout"]["gpus"] == 2
        assert (
            study["exact"]["online_optimum"]
            >= study["exact"]["scorer_expected"] - 4 * study["exact"]["scorer_expected_se"]
        )
        for part in (study["exact"]["headline"], study["rollout"]["headline"], study["rollout"]["sampled"]):
            assert all(r["policy"] <= r["clairvoyant"] and r["scorer"] <= r["clairvoyant"] for r in part["runs"])
        assert [d["seed"] for d in study["diagnosis"]] == [0, 1]
        assert [x["seed"] for x in study["decisive"]] == [
            d["seed"] for d in study["diagnosis"] if d["cause"] == "layout"
        ]
        assert study["blocks"]["blocks"] == 10 and study["blocks"]["blocks_at_or_below_headline"] >= 1
    assert result["summary"]["H100-80GB"]["study"]["same_as"] == "A100-40GB"
    md = (out / "mig_packing.md").read_text()
    assert "capacity bound" in md and "online optimum" in md.lower() and "no online bound" in md
    assert "Against the targets" in md and "Online policies on the headline seeds" in md


def test_layout_tables_give_the_engine_s_choices() -> None:
    t = Tables(A100, list(W))
    for seed in range(6):
        trace = make_trace(A100, 48, seed)
        assert rollout.serve(t, 2, trace, rollout.scorer(t)) == served_engine(A100, 2, trace)


def test_layout_classes_are_the_sixteen_symmetries_of_the_a100_slices() -> None:
    t = Tables(A100, list(W))
    assert len(automorphisms(A100)) == 16  # swap 0/1, 2/3, 4/5 and the pairs 0-1 / 2-3
    assert len(t.layouts) == 723 and len(t.classes) == 273 and t.classes[0] == 0
    one = [t.index[((s, 1, "1g.5gb"),)] for s in range(7)]
    assert len({t.class_of[x] for x in one[:4]}) == 1  # any slice of the low half is the same 1g.5gb
    assert t.class_of[one[4]] == t.class_of[one[5]] != t.class_of[one[6]] != t.class_of[one[0]]


def test_the_class_dp_is_the_layout_dp() -> None:
    t = Tables(A100, list(W))
    assert exact.ClassDP(t, 1, W, RELEASE_P).run(2) == pytest.approx(1.55)  # by hand, above
    assert exact.ClassDP(t, 1, W, RELEASE_P).run(16) == pytest.approx(bound.online_optimum(A100, 1, 16, W, RELEASE_P))
    assert exact.ClassDP(t, 2, W, RELEASE_P).run(10) == pytest.approx(bound.online_optimum(A100, 2, 10, W, RELEASE_P))
    assert exact.estimate(t, 4)["fleet_classes"] == 236_561_325


def test_the_best_online_move_keeps_the_low_half_for_a_4g() -> None:
    """One GPU, two events left: a 1g.5gb now, then a request (p 0.65) that fits unless it is a 7g, or a 4g when
    the 1g.5gb took the low half (slices 0-3): the best move puts it in the high half."""
    t = Tables(A100, list(W))
    dp = exact.ClassDP(t, 1, W, RELEASE_P)
    dp.run(2, keep=True)
    choice = dp.choose([0], t.profiles.index("1g.5gb"), 2)
    assert choice is not None and choice[1] >= 4


def test_the_generator_plays_the_scorer_and_the_rollout_decides_only_real_choices() -> None:
    t = Tables(A100, list(W))
    gen = rollout.Generator(t, W, RELEASE_P)
    seven = (0.9, 0.95)  # a request (0.9 >= 0.35) of the last profile on the cumulative weights: 7g.40gb
    assert gen.play([0], [], [seven, seven]) == 1 and gen.play([0, 0], [], [seven, seven, seven]) == 2
    policy = rollout.RolloutPolicy(gen, 8)
    seven_gpu = t.index[((0, 8, "7g.40gb"),)]
    assert policy([seven_gpu, 0], [(0, 0)], t.profiles.index("7g.40gb"), 5) == (1, 0, 8, seven_gpu)
    assert policy.decisions == 0  # one place only: nothing simulated


def test_replaying_the_clairvoyant_placements_serves_the_optimum_and_none_of_them_the_engine_s_figure() -> None:
    t = Tables(A100, list(W))
    for seed in (1, 3):
        trace = make_trace(A100, 48, seed)
        eng = served_engine(A100, 2, trace)
        opt, _ = optimum_prefix(A100, 2, trace, eng, 60.0)
        where: dict[int, tuple[int, int]] = {}
        assert served_optimum(A100, 2, trace[: _prefix_len(trace, opt)], 60.0, where)[0] == opt
        assert sorted(where) == list(range(opt))
        assert online_study._replay(t, 2, trace, where, 0)[0] == eng
        assert online_study._replay(t, 2, trace, where, opt)[0] == opt
