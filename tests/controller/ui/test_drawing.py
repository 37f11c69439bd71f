"""The dashboard's drawing geometry: MIG parts on the catalog's slice geometry, the NCCL curve's log-scale axis
and expected line, the refusal funnel, timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from controller.ui import drawing


def _device(model: str, instances: list[tuple[str, int, int]], **extra: object) -> dict[str, object]:
    return {
        "uuid": "GPU-1",
        "index": 0,
        "model": model,
        "mig_mode": "enabled",
        "mig_instances": [
            {"profile": p, "placement_start": s, "placement_size": n, "uuid": f"MIG-{s}", "busy": False}
            for p, s, n in instances
        ],
        "slices": [],
        **extra,
    }


def test_a_3g_40gb_at_start_4_on_an_a100_80gb_is_drawn_from_half_way() -> None:
    gpu = drawing.gpu_drawing(_device("NVIDIA A100-SXM4-80GB", [("3g.40gb", 4, 4)]), {("mig:GPU-1", 5): "lease-a"})
    assert gpu.kind == "mig" and gpu.slices == 8  # memory slices of the A100-80GB in the GPU catalog
    (free, held) = sorted(gpu.parts, key=lambda p: p.x)
    assert (held.label, held.x, held.width, held.lease, held.state) == ("3g.40gb", 240.0, 240.0, "lease-a", "leased")
    assert (free.label, free.x, free.width, free.start, free.size) == ("free", 0.0, 240.0, 0, 4)
    assert gpu.ticks == [60.0 * i for i in range(1, 8)]


def test_free_runs_between_instances_and_an_unleased_instance() -> None:
    gpu = drawing.gpu_drawing(_device("A100-80GB", [("1g.10gb", 0, 1), ("2g.20gb", 4, 2)]), {})
    assert [(p.label, p.start, p.size, p.state) for p in sorted(gpu.parts, key=lambda p: p.x)] == [
        ("1g.10gb", 0, 1, "idle"),
        ("free", 1, 3, "free"),
        ("2g.20gb", 4, 2, "idle"),
        ("free", 6, 2, "free"),
    ]


def test_timeslice_replicas_vgpus_and_whole_gpus() -> None:
    offers = [{"kind": "timeslice", "count": 4}]
    ts = drawing.gpu_drawing(_device("L4", [], mig_mode="disabled", slices=offers), {("share:GPU-1", 2): "l"})
    assert ts.kind == "timeslice" and [p.state for p in ts.parts] == ["free", "free", "leased", "free"]
    assert [p.x for p in ts.parts] == [0.0, 120.0, 240.0, 360.0]
    vgpu = drawing.gpu_drawing(_device("A16", [], mig_mode="disabled", slices=[{"kind": "vgpu", "count": 2}]), {})
    assert vgpu.kind == "vgpu" and len(vgpu.parts) == 2
    whole = drawing.gpu_drawing(_device("H100-80GB", [], mig_mode="disabled"), {("gpu:GPU-1", 0): "w"})
    assert whole.kind == "whole" and whole.parts[0].lease == "w" and whole.parts[0].width == drawing.GPU_WIDTH


def _row(size: int, busbw: float) -> dict[str, object]:
    return {"size_bytes": size, "out_of_place": {"busbw_gbps": busbw}, "in_place": {"busbw_gbps": busbw / 2}}


def test_the_nccl_curve_has_a_log2_size_axis_and_the_expected_line() -> None:
    rows = [_row(1 << e, 10.0 * (e - 2)) for e in range(3, 28)]  # 8 B .. 128 MiB
    chart = drawing.nccl_chart(rows, expected=360.0, threshold=288.0)
    assert chart is not None
    xs = [x for x, _, _, _ in chart.points]
    steps = [b - a for a, b in pairwise(xs)]
    assert max(steps) - min(steps) < 1e-9  # doubling the size is one equal step: a log2 axis
    assert xs[0] == drawing.PAD_L and xs[-1] == pytest.approx(drawing.CHART_W - drawing.PAD_R)
    assert chart.points[-1][3] == 250.0  # the better of out-of-place and in-place busbw
    assert chart.expected_y is not None and chart.threshold_y is not None
    assert chart.expected_y < chart.threshold_y < chart.points[-1][1]  # 360 above 288 above 250 (y grows down)
    assert [label for _, label in chart.x_ticks][:2] == ["8", "64"] and chart.x_ticks[-1][1] == "128M"
    assert chart.path.startswith(f"M{xs[0]:.1f},")
    assert drawing.nccl_chart([], expected=1.0, threshold=None) is None


def test_the_funnel_counts_hosts_left_after_each_filter() -> None:
    filters = [
        {"filter": "state", "removed_hosts": 1, "removed_devices": 8, "examples": ["h1 drained"]},
        {"filter": "model", "removed_hosts": 0, "removed_devices": 0},
        {"filter": "slice-kind", "removed_hosts": 2, "removed_devices": 16},
    ]
    steps = drawing.funnel_steps(drawing.candidate_hosts({"hosts": 4, "devices": 32}), filters)
    assert [(s.filter, s.removed_hosts, s.left_hosts) for s in steps] == [("state", 1, 3), ("slice-kind", 2, 1)]
    assert steps[0].bar == drawing.FUNNEL_W * 3 / 4 and steps[0].examples == ["h1 drained"]


def test_timeline_places_events_by_time() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    marks = drawing.timeline(
        [(t0 + timedelta(seconds=10), "ready", ""), (t0, "requested", "")], t0 + timedelta(seconds=20)
    )
    assert [m.label for m in marks] == ["requested", "ready"]
    assert marks[0].x == 16 and marks[1].x == pytest.approx(16 + (drawing.TIMELINE_W - 32) / 2)
