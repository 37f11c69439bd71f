"""The parsed form of one nccl-tests run.

The top-level keys of `NcclResult` (everything but `details`) and the keys of `NcclRow` are the
JSON shape promised by issue 8: consumers may rely on them exactly. Everything else the log
carries (parameter line, device list, version lines, warnings) lives under the one additional
key `details`, so the promised shape stays intact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NcclMeasurement(BaseModel):
    """One half of a row: the out-of-place or the in-place measurement."""

    model_config = ConfigDict(extra="forbid")

    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    # None when nccl-tests printed `N/A` (validation off, or in-place not checked for that
    # collective) or when the log uses the legacy `error` column, which is a relative delta
    # and not a count of wrong elements.
    wrong: int | None


class NcclRow(BaseModel):
    """One message size (one line of the result table)."""

    model_config = ConfigDict(extra="forbid")

    size_bytes: int
    count: int
    type: str
    redop: str | None
    root: int | None
    out_of_place: NcclMeasurement
    in_place: NcclMeasurement | None


class NcclParameters(BaseModel):
    """The `# nThread 1 nGpus 1 minBytes ... validation: 1 graph: 0` line."""

    n_threads: int | None = None
    n_gpus: int | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    step: int | None = None
    step_kind: Literal["factor", "bytes"] | None = None
    warmup_iters: int | None = None
    iters: int | None = None
    agg_iters: int | None = None
    validation: int | None = None
    graph: int | None = None
    # Fields newer releases append (e.g. `unalign: 0`), kept verbatim.
    other: dict[str, str] = Field(default_factory=dict)


class NcclDevice(BaseModel):
    """One `#  Rank  0 Group  0 Pid  1234 on host device  0 [0x17] NVIDIA H100 80GB HBM3` line."""

    rank: int
    group: int | None = None
    pid: int
    host: str
    gpu_index: int
    pci_bus_id: str
    name: str


RanksSource = Literal["device_list", "inferred_from_counts"]


class NcclRunDetails(BaseModel):
    """What the log says besides the table; not part of the issue's promised keys."""

    parameters: NcclParameters | None = None
    devices: list[NcclDevice] = Field(default_factory=list)
    nccl_tests_version: str | None = None
    # Raw nccl-tests/rccl-tests version line, e.g. `nccl-tests version 2.18.3 nccl-headers=23004 nccl-library=23004`.
    tests_version_line: str | None = None
    cuda_version: str | None = None
    command: str | None = None
    ranks_source: RanksSource | None = None
    # `time` or `cputime` (`-C 1`): which clock the time column reports.
    time_column: str | None = None
    # `#wrong` (element counts) or `error`/`res` (legacy relative deltas).
    wrong_column: str | None = None
    avg_busbw_printed: str | None = None
    out_of_bounds_status: str | None = None
    max_bytes_reduced_to: int | None = None
    # Things worth a look that do not make the run fail (NCCL WARN lines, unreadable row-like lines...).
    warnings: list[str] = Field(default_factory=list)


class NcclResult(BaseModel):
    """A parsed nccl-tests log. `ok` is true exactly when `errors` is empty."""

    test: str | None
    nccl_version: str | None
    ranks: int | None
    rows: list[NcclRow]
    avg_busbw_gbps: float | None
    out_of_bounds: int | None
    errors: list[str]
    ok: bool
    details: NcclRunDetails = Field(default_factory=NcclRunDetails)

    def issue_json(self) -> dict[str, object]:
        """The issue's JSON shape exactly, without `details`."""
        return self.model_dump(mode="json", exclude={"details"})


ISSUE_RESULT_KEYS = frozenset(
    {"test", "nccl_version", "ranks", "rows", "avg_busbw_gbps", "out_of_bounds", "errors", "ok"}
)
ISSUE_ROW_KEYS = frozenset({"size_bytes", "count", "type", "redop", "root", "out_of_place", "in_place"})
ISSUE_MEASUREMENT_KEYS = frozenset({"time_us", "algbw_gbps", "busbw_gbps", "wrong"})
