"""The JSON shape promised by issue 8 and the helpers verdicts use."""

from __future__ import annotations

import json
from pathlib import Path

from drivers.nccl import NcclResult, largest_rows, parse_nccl_output, peak_busbw, row_busbw
from drivers.nccl.models import ISSUE_MEASUREMENT_KEYS, ISSUE_RESULT_KEYS, ISSUE_ROW_KEYS

FIXTURES = Path(__file__).parent / "fixtures"


def _result(name: str) -> NcclResult:
    return parse_nccl_output((FIXTURES / name).read_text())


def test_issue_keys_exactly() -> None:
    data = json.loads(_result("zero_bytes_sendrecv_mixed_na.log").model_dump_json())
    assert set(data) == ISSUE_RESULT_KEYS | {"details"}
    assert set(data) - {"details"} == {
        "test", "nccl_version", "ranks", "rows", "avg_busbw_gbps", "out_of_bounds", "errors", "ok",
    }  # fmt: skip
    for row in data["rows"]:
        assert set(row) == ISSUE_ROW_KEYS
        assert set(row["out_of_place"]) == ISSUE_MEASUREMENT_KEYS == {"time_us", "algbw_gbps", "busbw_gbps", "wrong"}
        assert set(row["in_place"]) == ISSUE_MEASUREMENT_KEYS
    assert data["rows"][1]["in_place"]["wrong"] is None  # N/A -> null
    assert isinstance(data["rows"][0]["size_bytes"], int) and isinstance(data["avg_busbw_gbps"], float)


def test_issue_json_without_details_and_nulls_where_unknown() -> None:
    data = _result("truncated_all_reduce.log").issue_json()
    assert set(data) == ISSUE_RESULT_KEYS
    assert data["avg_busbw_gbps"] is None and data["out_of_bounds"] is None and data["nccl_version"] is None
    assert data["ok"] is False and data["errors"]


def test_in_place_null_when_only_out_of_place_printed() -> None:
    r = parse_nccl_output("           8             2     float     sum      -1    12.90    0.00    0.00      0\n")
    assert r.issue_json()["rows"][0]["in_place"] is None  # type: ignore[index]


def test_round_trip() -> None:
    r = _result("mpirun_tag_output_all_reduce.log")
    assert NcclResult.model_validate_json(r.model_dump_json()) == r


def test_largest_rows_and_peak() -> None:
    r = _result("wrong_elements_all_reduce.log")
    top = largest_rows(r, 2)
    assert [row.size_bytes for row in top] == [16777216, 8388608]
    assert largest_rows(r, 0) == []
    assert len(largest_rows(r, 100)) == len(r.rows)
    assert peak_busbw(r) == max(row_busbw(row) for row in r.rows)


def test_peak_uses_in_place_when_higher_and_none_without_rows() -> None:
    r = _result("zero_bytes_sendrecv_mixed_na.log")
    assert peak_busbw(r) == 43046.10
    assert peak_busbw(parse_nccl_output("nothing here")) is None


def test_largest_rows_keeps_every_row_of_a_size() -> None:
    lines = [
        "     1048576        262144     float     sum      -1    26.99   38.85   67.99      0    26.72   39.24   68.67      0",
        "     1048576        524288      half     sum      -1    26.00   40.33   70.58      0    26.10   40.18   70.31      0",
        "      524288        131072     float     sum      -1    20.00   26.21   45.87      0    20.10   26.08   45.64      0",
    ]
    r = parse_nccl_output("\n".join(lines))
    assert [row.type for row in largest_rows(r, 1)] == ["float", "half"]
