"""Expected bandwidth per interconnect and the verdict over a parsed log."""

from __future__ import annotations

import pytest

from controller.validation.expected import interconnect_for_model, network_expected, single_node_expected
from controller.validation.jobs import cron_trigger
from controller.validation.verdict import judge
from drivers.nccl import parse_nccl_output


@pytest.mark.parametrize(
    ("instance_type", "gbps"), [("g6.12xlarge", 5.0), ("p4d.24xlarge", 50.0), ("p5.48xlarge", 400.0)]
)
def test_network_expected_is_gbps_over_8(instance_type: str, gbps: float) -> None:
    expected = network_expected(instance_type)
    assert expected.busbw_gbps == gbps
    assert "/ 8" in expected.source
    assert network_expected(None, 100).busbw_gbps == 12.5
    assert network_expected("m5.large").busbw_gbps is None


def test_single_node_expected_by_gpu_model() -> None:
    assert single_node_expected("NVIDIA H100 80GB HBM3", 8).busbw_gbps == 360.0
    assert single_node_expected("NVIDIA A100-SXM4-80GB", 8).busbw_gbps == 230.0
    assert single_node_expected("NVIDIA H100 PCIe", 2).busbw_gbps == 24.0
    assert single_node_expected("NVIDIA L4", 4).busbw_gbps == 12.0
    assert single_node_expected("NVIDIA H100 80GB HBM3", 1).busbw_gbps == 0.0
    assert single_node_expected("Mystery GPU", 8).busbw_gbps is None
    link = interconnect_for_model("NVIDIA H200")
    assert link is not None and link.name.startswith("NVLink 4")


def _log(busbw: float, wrong: int = 0, trailer: bool = True) -> str:
    rows = []
    for size, bw in ((33554432, busbw * 0.9), (67108864, busbw), (134217728, busbw)):
        algbw = bw / 1.75
        rows.append(
            f"{size:12d} {size // 4:12d} float sum -1 100.0 {algbw:.2f} {bw:.2f} {wrong} 100.0 {algbw:.2f} {bw:.2f} {wrong}"
        )
    tail = ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {busbw / 2:.2f}"] if trailer else []
    header = "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong"
    return "\n".join([header, *rows, *tail]) + "\n"


def test_g6_measured_figure_passes() -> None:
    verdict = judge(parse_nccl_output(_log(4.93)), 5.0, 0.8, expected_source="g6.12xlarge EFA 40 Gbps / 8")
    assert verdict["passed"] is True
    assert verdict["measured_busbw_gbps"] == 4.93 and verdict["ratio"] == pytest.approx(0.986)
    assert verdict["threshold_busbw_gbps"] == 4.0


def test_low_bandwidth_wrong_rows_and_failures_fail() -> None:
    low = judge(parse_nccl_output(_log(3.5)), 5.0, 0.8)
    assert low["passed"] is False and "70% of the expected 5 GB/s" in low["reasons"][0]
    wrong = judge(parse_nccl_output(_log(6.0, wrong=3)), 5.0, 0.8)
    assert wrong["passed"] is False and len(wrong["wrong_rows"]) == 3
    truncated = judge(parse_nccl_output(_log(6.0, trailer=False)), 5.0, 0.8)
    assert truncated["passed"] is False and truncated["errors"]
    crashed = judge(None, 5.0, 0.8, run_failed="timed out after 1800s")
    assert crashed["passed"] is None and crashed["reasons"] == ["timed out after 1800s"]


def test_unknown_expected_is_not_judged_unless_data_is_wrong() -> None:
    assert judge(parse_nccl_output(_log(6.0)), None, 0.8)["passed"] is None
    assert judge(parse_nccl_output(_log(6.0, wrong=1)), None, 0.8)["passed"] is False


def test_cron_uses_crontab_weekdays() -> None:
    from datetime import UTC, datetime

    monday = datetime(2026, 11, 23, tzinfo=UTC)
    assert cron_trigger("0 3 * * 0").get_next_fire_time(None, monday).strftime("%a") == "Sun"
    assert cron_trigger("0 3 * * 1-5").get_next_fire_time(None, monday).strftime("%a %H") == "Mon 03"
    with pytest.raises(ValueError):
        cron_trigger("0 3 * *")
