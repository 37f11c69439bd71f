"""bench/mig_packing and its bounds: hand-checked values of the bounds, and the bench end to end on a tiny
configuration writing its figures where it is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.mig_packing import bound
from bench.mig_packing.__main__ import PROFILE_WEIGHTS, RELEASE_P, main, make_trace, optimum_prefix, served_engine

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
    argv += ["--sample-seeds", "2", "--out", str(out)]
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
    md = (out / "mig_packing.md").read_text()
    assert "capacity bound" in md and "online optimum" in md.lower() and "no online bound" in md
    assert "Against the targets" in md
