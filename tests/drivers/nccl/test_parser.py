"""The parser against hand-written logs, one per quirk real logs show."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.nccl import NcclResult, parse_nccl_output

FIXTURES = Path(__file__).parent / "fixtures"


def parse(name: str) -> NcclResult:
    return parse_nccl_output((FIXTURES / name).read_text())


def test_mpirun_tag_output_prefixes_and_trailing_whitespace() -> None:
    r = parse("mpirun_tag_output_all_reduce.log")
    assert r.ok and r.errors == []
    assert r.test == "all_reduce_perf"
    assert r.nccl_version == "2.26.5"  # the library's own line wins over nccl-library=22605
    assert r.details.nccl_tests_version == "2.17.1"
    assert r.details.cuda_version == "12.8"
    assert r.ranks == 16 and r.details.ranks_source == "device_list"
    assert len(r.rows) == 21
    assert (r.rows[0].size_bytes, r.rows[-1].size_bytes) == (1024, 1073741824)
    assert r.avg_busbw_gbps == 101.472 and r.out_of_bounds == 0


def test_device_list_with_short_pci_form() -> None:
    r = parse("mpirun_tag_output_all_reduce.log")
    first, last = r.details.devices[0], r.details.devices[-1]
    assert (first.rank, first.group, first.pid, first.host, first.gpu_index) == (0, 0, 40000, "node-a", 0)
    assert first.pci_bus_id == "0x18" and first.name == "NVIDIA H100 80GB HBM3"
    assert (last.rank, last.host, last.gpu_index) == (15, "node-b", 7)


def test_srun_label_prefixes_with_info_lines_from_other_ranks() -> None:
    r = parse("srun_label_all_gather.log")
    assert r.ok
    assert r.ranks == 8
    assert len(r.rows) == 16
    assert r.rows[0].redop == "none" and r.rows[0].root == -1
    assert r.details.devices[0].pci_bus_id == "0000:18:00"  # domain form
    assert r.details.devices[0].name == "NVIDIA A100-SXM4-80GB"
    assert r.avg_busbw_gbps == 58.3141


def test_indented_markdown_paste() -> None:
    r = parse("indented_reduce_scatter.log")
    assert r.ok
    assert r.test == "reduce_scatter_perf"  # from the command line in the paste
    assert r.details.parameters is not None and r.details.parameters.n_gpus == 4
    assert len(r.rows) == 11 and r.ranks == 4


def test_nccl_info_interleaved_and_a_row_cut_by_a_glued_debug_line() -> None:
    r = parse("nccl_info_interleaved_broadcast.log")
    assert r.ok, r.errors
    assert r.nccl_version == "2.21.5"
    assert len(r.rows) == 8
    cut = r.rows[2]
    assert cut.size_bytes == 4194304
    assert cut.out_of_place.time_us == 47.96 and cut.out_of_place.busbw_gbps == 87.45
    assert cut.in_place is not None and cut.in_place.busbw_gbps == 88.33
    assert all(row.root == 0 for row in r.rows)
    # A benign NCCL WARN is a warning, not a failure.
    assert any("NCCL WARN" in w for w in r.details.warnings)
    assert r.details.parameters is not None and r.details.parameters.other == {"unalign": "0"}


def test_avg_is_taken_as_printed_not_recomputed() -> None:
    r = parse("nccl_info_interleaved_broadcast.log")
    mean = sum(row.out_of_place.busbw_gbps for row in r.rows) / len(r.rows)
    assert r.avg_busbw_gbps == 187.5 != pytest.approx(mean)
    assert r.details.avg_busbw_printed == "187.5"


def test_every_hash_missing() -> None:
    r = parse("no_hash_alltoall.log")
    assert r.ok
    assert r.details.parameters is not None and r.details.parameters.min_bytes == 1048576
    assert r.ranks == 16 and len(r.details.devices) == 16
    assert len(r.rows) == 11
    assert r.out_of_bounds == 0 and r.avg_busbw_gbps == 42.7716


def test_oldest_format_without_redop_and_root_and_legacy_error_column() -> None:
    r = parse("old_format_all_gather_no_redop_root.log")
    assert r.ok
    assert len(r.rows) == 5
    row = r.rows[0]
    assert (row.redop, row.root, row.type) == (None, None, "float")
    assert row.out_of_place.wrong is None  # 0e+00 is a relative delta, not a count
    assert r.details.wrong_column == "error"
    assert any("legacy 'error' column" in w for w in r.details.warnings)
    # Device lines without the Group field.
    assert r.details.devices[1].group is None and r.details.devices[1].name == "Tesla K80"
    assert r.ranks == 2


def test_redop_without_root_and_error_over_threshold() -> None:
    r = parse("old_format_redop_no_root_threshold.log")
    assert not r.ok
    assert all(row.redop == "sum" and row.root is None for row in r.rows)
    assert r.out_of_bounds == 1
    assert any("1024 B" in e and "'*'" in e for e in r.errors)
    assert any("out of bounds values: 1 FAILED" in e for e in r.errors)


def test_validation_off_gives_na_wrong() -> None:
    r = parse("validation_off_reduce_na.log")
    assert r.ok
    assert all(row.out_of_place.wrong is None and row.in_place and row.in_place.wrong is None for row in r.rows)
    assert r.rows[0].type == "bfloat16" and r.rows[0].redop == "max" and r.rows[0].root == 3
    assert r.details.parameters is not None and r.details.parameters.validation == 0
    assert any("validation was off" in w for w in r.details.warnings)


def test_e_notation_counts() -> None:
    r = parse("e_notation_counts.log")
    assert r.ok
    assert r.rows[0].count == 67108900  # 6.71089e+07, rounded as printed
    assert r.rows[-1].count == 1073740000
    assert any("e-notation" in w for w in r.details.warnings)


def test_zero_byte_rows_mixed_na_and_wide_algbw() -> None:
    r = parse("zero_bytes_sendrecv_mixed_na.log")
    assert r.ok
    assert r.test == "sendrecv_perf"
    assert [row.size_bytes for row in r.rows[:2]] == [0, 0]
    assert r.rows[1].in_place is not None and r.rows[1].in_place.wrong is None
    wide = r.rows[-1]
    assert wide.out_of_place.wrong == 0
    assert wide.in_place is not None
    assert (wide.in_place.time_us, wide.in_place.algbw_gbps, wide.in_place.wrong) == (0.78, 43046.10, None)


def test_truncated_log_has_no_average() -> None:
    r = parse("truncated_all_reduce.log")
    assert r.avg_busbw_gbps is None  # unknown, never 0
    assert r.out_of_bounds is None
    assert len(r.rows) == 9
    assert not r.ok
    assert any("ends before the 'Avg bus bandwidth'" in e for e in r.errors)


def test_cuda_failure_mid_table() -> None:
    r = parse("cuda_failure_mid_table.log")
    assert not r.ok
    assert len(r.rows) == 4
    assert any("Test CUDA failure" in e for e in r.errors)
    assert any("Test failure common.cu:1021" in e for e in r.errors)
    assert any("non-zero exit code" in e for e in r.errors)


def test_nonzero_wrong_elements() -> None:
    r = parse("wrong_elements_all_reduce.log")
    assert not r.ok
    bad = next(row for row in r.rows if row.size_bytes == 4194304)
    assert bad.out_of_place.wrong == 1024
    assert bad.in_place is not None and bad.in_place.wrong == 3
    assert "4194304 B float out-of-place: 1024 wrong elements" in r.errors
    assert r.out_of_bounds == 2 and r.details.out_of_bounds_status == "FAILED"


def test_nonzero_out_of_bounds_alone_fails() -> None:
    r = parse("out_of_bounds_only.log")
    assert all(row.out_of_place.wrong == 0 for row in r.rows)
    assert not r.ok
    assert r.errors == ["out of bounds values: 1 FAILED"]


def test_average_below_min_bw_fails() -> None:
    r = parse("avg_below_min_bw.log")
    assert r.avg_busbw_gbps == 31.3176
    assert not r.ok and "NCCL_TESTS_MIN_BW" in r.errors[0]


def test_tables_from_several_processes() -> None:
    r = parse("srun_without_mpi_duplicated.log")
    assert not r.ok
    assert len(r.rows) == 2
    assert "several processes" in r.errors[0]


def test_rccl_tests_log() -> None:
    r = parse("rccl_all_reduce.log")
    assert r.ok
    assert r.nccl_version == "2.20.5"
    assert r.details.nccl_tests_version == "rccl-tests develop:1a2b3c4"
    assert r.ranks == 8 and r.details.devices[0].name == "AMD Instinct MI300X"


def test_text_without_a_table() -> None:
    r = parse("not_nccl.log")
    assert not r.ok
    assert r.rows == [] and r.avg_busbw_gbps is None and r.out_of_bounds is None
    assert r.errors == ["no nccl-tests result table found in the text"]


def test_empty_text() -> None:
    r = parse_nccl_output("")
    assert not r.ok and r.rows == []


def test_header_without_rows_is_a_failed_run() -> None:
    text = (FIXTURES / "truncated_all_reduce.log").read_text()
    header_only = "\n".join(line for line in text.splitlines() if not line.strip()[:1].isdigit())
    r = parse_nccl_output(header_only)
    assert not r.ok and r.rows == []
    assert "no data rows" in r.errors[0]


@pytest.mark.parametrize(
    ("binary", "factor"),
    [
        ("all_reduce_perf", None),
        ("all_gather_perf", 8),
        ("reduce_scatter_perf", 8),
        ("alltoall_perf", 8),
        ("broadcast_perf", None),
        ("reduce_perf", None),
        ("sendrecv_perf", None),
    ],
)
def test_every_binary_and_rank_inference(binary: str, factor: int | None) -> None:
    """Without a device list, ranks are inferred only where the count is divided by nranks."""
    size = 8388608
    count = size // 4 // (factor or 1)
    text = "\n".join(
        [
            f"# Collective test starting: {binary}",
            "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong",
            f"{size:12d}  {count:12d}     float    none      -1    100.0   83.89   73.40      0     99.0   84.74   74.15      0",
            "# Out of bounds values : 0 OK",
            "# Avg bus bandwidth    : 73.4 ",
        ]
    )
    r = parse_nccl_output(text)
    assert r.ok and r.test == binary
    assert r.ranks == factor
    assert r.details.ranks_source == ("inferred_from_counts" if factor else None)


def test_rank_inference_with_unknown_test_needs_a_matching_bandwidth_ratio() -> None:
    base = "     8388608        131072     float    none      -1    166.6   50.34   {busbw}    N/A    164.1   51.11   47.92    N/A"
    ok = parse_nccl_output(base.format(busbw="47.19"))  # 47.19 / 50.34 = 15/16
    assert ok.ranks == 16
    mismatched = parse_nccl_output(base.format(busbw="25.17"))  # ratio 1/2 disagrees with 16 ranks
    assert mismatched.ranks is None


def test_nan_average_is_not_a_number_we_keep() -> None:
    text = (FIXTURES / "out_of_bounds_only.log").read_text()
    text = text.replace("Out of bounds values : 1 FAILED", "Out of bounds values : 0 OK").replace("71.2", "-nan")
    r = parse_nccl_output(text)
    assert r.avg_busbw_gbps is None and r.details.avg_busbw_printed == "-nan"
    assert not r.ok and "no usable value" in r.errors[0]


def test_reducing_max_bytes_and_cputime_column() -> None:
    text = "\n".join(
        [
            "# nThread 1 nGpus 8 minBytes 8 maxBytes 137438953472 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0",
            "#",
            "# Reducing maxBytes to 26843545600 due to memory limitation",
            "#       size         count      type   redop    root  cputime   algbw   busbw #wrong  cputime   algbw   busbw #wrong",
            "           8             2     float     sum      -1    12.90    0.00    0.00      0    12.87    0.00    0.00      0",
            "# Out of bounds values : 0 OK",
            "# Avg bus bandwidth    : 0.00123 ",
        ]
    )
    r = parse_nccl_output(text)
    assert r.ok
    assert r.details.max_bytes_reduced_to == 26843545600
    assert r.details.time_column == "cputime"
    assert r.details.parameters is not None
    assert (r.details.parameters.step, r.details.parameters.step_kind, r.details.parameters.max_bytes) == (
        2,
        "factor",
        137438953472,
    )


def test_out_of_place_only_rows_and_in_place_on_the_next_line() -> None:
    text = "\n".join(
        [
            "           8             2     float     sum      -1    12.90    0.00    0.00      0",
            "host:1:2 [0] NCCL INFO something in between",
            "    12.87    0.00    0.00      0",
            "          16             4     float     sum      -1    12.88    0.00    0.00      0",
            "# Out of bounds values : 0 OK",
            "# Avg bus bandwidth    : 0 ",
        ]
    )
    r = parse_nccl_output(text)
    assert r.ok
    assert r.rows[0].in_place is not None and r.rows[0].in_place.time_us == 12.87
    assert r.rows[1].in_place is None


def test_skipped_check_printed_as_minus_one() -> None:
    line = "        1024           256     float     sum      -1    16.43    0.06    0.11     -1    15.61    0.07    0.11     -1"
    r = parse_nccl_output(line + "\n# Out of bounds values : 0 OK\n# Avg bus bandwidth : 0.11")
    assert r.ok and r.rows[0].out_of_place.wrong is None


def test_nccl_warn_is_copied_into_errors_only_when_the_run_failed() -> None:
    warn = "host:1:1 [0] misc/socket.cc:50 NCCL WARN something odd"
    clean = (FIXTURES / "out_of_bounds_only.log").read_text().replace("1 FAILED", "0 OK")
    assert parse_nccl_output(warn + "\n" + clean).ok
    failed = parse_nccl_output(warn + "\n" + clean + "\nhost: Test NCCL failure common.cu:1 'x / y'\n")
    assert not failed.ok
    assert any(e.startswith("before the failure:") and "NCCL WARN" in e for e in failed.errors)


def test_kubectl_timestamps_before_the_launcher_tag() -> None:
    lines = [
        "2025-01-02T03:04:05.123456789Z [1,0]<stdout>:#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong",
        "2025-01-02T03:04:05.223456789Z [1,0]<stdout>:     1048576        262144     float     sum      -1    26.99   38.85   67.99      0    26.72   39.24   68.67      0",
        "2025-01-02T03:04:05.323456789Z [1,0]<stdout>:# Out of bounds values : 0 OK",
        "2025-01-02T03:04:05.423456789Z [1,0]<stdout>:# Avg bus bandwidth    : 67.99 ",
    ]
    r = parse_nccl_output("\n".join(lines))
    assert r.ok and len(r.rows) == 1 and r.avg_busbw_gbps == 67.99
