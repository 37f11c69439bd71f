"""Optional: real third-party logs in ../shared/testdata/nccl-tests, checked against the README's expected values.

The files are read in place (never copied into the repository); the test skips when the folder is absent.
Rank counts: from the device list when one is printed; otherwise inferred from counts for all_gather-like
tables (the README documents 16 for the dstack all_gather); otherwise null.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.nccl import NcclResult, largest_rows, parse_nccl_output, peak_busbw

REPO_ROOT = Path(__file__).resolve().parents[3]
TESTDATA = (REPO_ROOT / ".." / "shared" / "testdata" / "nccl-tests").resolve()

pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"{TESTDATA} not present")

Half = tuple[float, float, float, int | None]


@dataclass(frozen=True)
class Expected:
    rows: int
    first_size: int | None
    last_size: int | None
    largest_oop: Half | None
    largest_ip: Half | None
    out_of_bounds: int | None
    avg: float | None
    ok: bool
    ranks: int | None
    test: str | None = None


EXPECTED: dict[str, Expected] = {
    "awsome-awsbatch-p5-allreduce-tagoutput.txt": Expected(
        32, 8, 17179869184, (62239, 276.03, 483.05, 0), (62200, 276.20, 483.35, 0), 0, 156.742, True, None
    ),
    "dstack-gcp-a3mega-allgather-c0.txt": Expected(
        11, 8388608, 8589934592, (42713, 201.11, 188.54, None), (42701, 201.16, 188.59, None), 0, 146.948, True, 16
    ),
    "gcp-a3mega-h100-2node-allreduce-clean.txt": Expected(
        31, 8, 8589934592, (47535, 180.71, 338.82, 0), (47743, 179.92, 337.35, 0), 0, 70.742, True, 16,
        "all_reduce_perf",
    ),
    "nccltests-issue124-allreduce-c0-cudafailure.txt": Expected(0, None, None, None, None, None, None, False, 2),
    "nccltests-issue287-alltoall-1gpu-inplace-NA.txt": Expected(
        1, 33554432, 33554432, (19.56, 1715.44, 0.00, 0), (0.78, 43046.10, 0.00, None), 0, 0.0, True, 1,
        "alltoall_perf",
    ),
    "nris-olivia-gh200-2node-allreduce-int8.txt": Expected(
        28, 1, 134217728, (2309.49, 58.12, 101.70, 0), (2182.20, 61.51, 107.63, 0), 0, 17.8617, True, 8,
        "all_reduce_perf",
    ),
    "rccl-issue1490-allreduce-4node-srunlabel.txt": Expected(
        17, 65536, 4294967296, (89585, 47.94, 92.89, 0), (89596, 47.94, 92.88, 0), 0, 43.7269, True, None
    ),
}  # fmt: skip


def _parse(name: str) -> NcclResult:
    return parse_nccl_output((TESTDATA / name).read_text(encoding="utf-8", errors="replace"))


def test_every_real_file_has_expectations() -> None:
    assert {p.name for p in TESTDATA.iterdir() if p.is_file()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_log(name: str) -> None:
    want = EXPECTED[name]
    r = _parse(name)
    assert len(r.rows) == want.rows
    if want.rows:
        assert (r.rows[0].size_bytes, r.rows[-1].size_bytes) == (want.first_size, want.last_size)
        largest = largest_rows(r, 1)[0]
        assert largest.in_place is not None
        oop, ip = largest.out_of_place, largest.in_place
        assert (oop.time_us, oop.algbw_gbps, oop.busbw_gbps, oop.wrong) == want.largest_oop
        assert (ip.time_us, ip.algbw_gbps, ip.busbw_gbps, ip.wrong) == want.largest_ip
    assert r.out_of_bounds == want.out_of_bounds
    assert r.avg_busbw_gbps == want.avg
    assert r.ok is want.ok, r.errors
    assert (r.errors == []) is want.ok
    assert r.ranks == want.ranks
    if want.test:
        assert r.test == want.test


def test_tag_output_header_with_long_trailing_whitespace() -> None:
    r = _parse("awsome-awsbatch-p5-allreduce-tagoutput.txt")
    assert r.details.wrong_column == "#wrong" and r.details.avg_busbw_printed == "156.742"
    assert r.details.devices == [] and r.details.ranks_source is None


def test_dstack_no_hash_indented_validation_off() -> None:
    r = _parse("dstack-gcp-a3mega-allgather-c0.txt")
    assert r.details.parameters is not None and r.details.parameters.validation == 0
    assert r.details.parameters.iters == 200
    assert all(row.redop == "none" and row.root == -1 for row in r.rows)
    assert all(row.out_of_place.wrong is None and row.in_place and row.in_place.wrong is None for row in r.rows)
    assert r.details.ranks_source == "inferred_from_counts"


def test_gcp_device_list_domain_form_and_hosts() -> None:
    r = _parse("gcp-a3mega-h100-2node-allreduce-clean.txt")
    devices = r.details.devices
    assert [d.rank for d in devices] == list(range(16))
    assert {d.host for d in devices[:8]} == {"ztan-mig-235z"} and {d.host for d in devices[8:]} == {"ztan-mig-gq73"}
    assert devices[0].pci_bus_id == "0000:04:00" and devices[0].name == "NVIDIA H100 80GB HBM3"
    assert r.details.ranks_source == "device_list"


def test_cuda_failure_run_reports_errors_not_zero_bandwidth() -> None:
    r = _parse("nccltests-issue124-allreduce-c0-cudafailure.txt")
    assert r.nccl_version == "2.15.5" and r.details.cuda_version == "11.8"
    assert r.details.parameters is not None and r.details.parameters.step_kind == "bytes"
    assert r.details.parameters.step == 1048576 and r.details.parameters.n_gpus == 2
    assert any("Test NCCL failure all_reduce.cu:44" in e for e in r.errors)
    assert sum("Test failure" in e for e in r.errors) == 6
    assert any("CUDA driver is a stub library" in e for e in r.errors)
    assert any("no data rows" in e for e in r.errors)


def test_alltoall_integer_avg_and_mixed_wrong() -> None:
    r = _parse("nccltests-issue287-alltoall-1gpu-inplace-NA.txt")
    assert r.details.avg_busbw_printed == "0"
    assert r.details.parameters is not None and r.details.parameters.min_bytes == r.details.parameters.max_bytes
    row = r.rows[0]
    assert (row.count, row.type, row.redop, row.root) == (8388608, "float", "none", -1)


def test_olivia_versions_and_peak() -> None:
    r = _parse("nris-olivia-gh200-2node-allreduce-int8.txt")
    assert r.details.nccl_tests_version == "2.18.3"
    assert r.nccl_version == "2.30.4"  # from nccl-library=23004
    assert r.details.parameters is not None and r.details.parameters.other == {"unalign": "0"}
    assert peak_busbw(r) == 107.63
    assert [d.pid for d in r.details.devices[:2]] == [221423, 221421]
    assert r.rows[0].type == "int8"
