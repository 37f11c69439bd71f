"""Parse the text output of the nccl-tests binaries (all_reduce_perf, all_gather_perf, ...).

The parser reads logs as people and launchers actually keep them: behind `mpirun --tag-output`
or `srun --label` prefixes, indented, pasted into Markdown, with every `#` lost, with NCCL debug
lines interleaved (sometimes glued to a table row), cut off before the summary, or ending in a
CUDA/NCCL failure. It reads each line on its own, by meaning rather than by column position:
fixed columns break as soon as a value is wider than its printf field (an algbw of 43046.10).

Rules that matter for a verdict (see docs/nccl.md):
- `ok` is true exactly when `errors` is empty.
- The `Avg bus bandwidth` is taken as printed, never recomputed; absent means null, never 0.
- A bare `NCCL WARN` line is a warning, not a failure: NCCL warns about recoverable things in runs
  that complete. A real failure makes nccl-tests print `Test NCCL failure` / `Test failure`, which
  is an error; the WARN lines are then copied into `errors` because they usually say why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.nccl.models import (
    NcclDevice,
    NcclParameters,
    NcclResult,
    NcclRow,
    NcclRunDetails,
)
from drivers.nccl.rows import is_value, looks_like_row_start, parse_measurement, parse_row

# ---- line prefixes added by launchers -------------------------------------------------------
_TAG_OUTPUT = re.compile(r"^\s*\[(\d+),(\d+)\]<(?:stdout|stderr)>:")  # mpirun --tag-output
_SRUN_LABEL = re.compile(r"^\s*(\d+): ")  # srun --label
# kubectl logs --timestamps
_ISO_TIMESTAMP = re.compile(r"^\s*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)? ")
_MARKDOWN_QUOTE = re.compile(r"^\s*>\s?")

# An NCCL debug message (`host:pid:tid [dev] NCCL INFO ...`); it can be glued to a table row.
# The host part starts with a letter so that a row glued to it (`47.96h100-x:7001:...`) keeps its number.
_NCCL_DEBUG = re.compile(r"[A-Za-z][\w.-]*:\d+:\d+ \[\d+\] (?:\S+:\d+ )?NCCL (?:INFO|WARN|TRACE|ABORT)\b")

# ---- header and trailer lines ------------------------------------------------------------------
_COLLECTIVE_TEST = re.compile(r"^Collective test (?:starting|concluded):\s*(\S+)")
_TESTS_VERSION = re.compile(r"^nccl-tests version\s+(\S+)(.*)$")
_RCCL_TESTS_VERSION = re.compile(r"^rccl-tests:\s*Version\s+(\S+)")
_NCCL_LIBRARY_CODE = re.compile(r"\bnccl-library=(\d+)")
_LIBRARY_VERSION = re.compile(r"\b[NR]CCL version\s+(\d+\.\d+\.\d+)(?:\S*?\+cuda(\d+(?:\.\d+)*))?")
_PARAMETERS = re.compile(r"^nThread\s+\d+\s+nGpus\s+\d+")
_PARAM_WORD = re.compile(r"\b(nThread|nGpus|minBytes|maxBytes)\s+(-?\d+)")
_PARAM_STEP = re.compile(r"\bstep:\s*(\d+)\s*\((factor|bytes)\)")
_PARAM_COLON = re.compile(r"(warmup iters|agg iters|[A-Za-z_][\w-]*):\s*(\S+)")
_REDUCED_MAX_BYTES = re.compile(r"Reducing maxBytes to (\d+)")
_DEVICE = re.compile(
    r"^Rank\s+(\d+)\s+(?:Group\s+(\d+)\s+)?Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)\s+\[([^\]]+)\]\s+(.+?)\s*$"
)
_GROUP_HEADER = re.compile(r"^out-of-place\s+in-place\b")
_COLUMN_HEADER = re.compile(r"^(?:size|bytes)\s+(?:count|N)\s+type\b")
_UNITS_HEADER = re.compile(r"^\(B\)\s+\(elements\)")
_OUT_OF_BOUNDS = re.compile(r"^Out of bounds values\s*:\s*(-?\d+)\s*(\w+)?")
_AVG_BUSBW = re.compile(r"^Avg bus bandwidth\s*:\s*(\S+)\s*(\w+)?")
_COMMAND = re.compile(r"(?:^|[\s/])([a-z][a-z0-9_]*_perf(?:_mpi)?)(?=\s|$)")

# ---- failure lines (nccl-tests' own CUDACHECK/NCCLCHECK/TESTCHECK, MPI, Slurm, the kernel) ------
_FAILURES = re.compile(
    r"Test (?:NCCL |CUDA )?failure"
    r"|Test timeout"
    r"|Failed: (?:Cuda|NCCL) error"
    r"|MPI_ABORT was invoked"
    r"|exited on signal \d+"
    r"|Segmentation fault"
    r"|core dumped"
    r"|srun: error: .*(?:exit code [1-9]|Killed|Terminated|Aborted)"
    r"|a non-zero exit code"
    r"|exited with non-zero status"
)
_NCCL_WARN = re.compile(r"\bNCCL WARN\b")

# ---- table values ----------------------------------------------------------------------------
_INTEGER = re.compile(r"^-?\d+$")
_WORD_SIZES = {
    "int8": 1, "uint8": 1, "char": 1, "f8e4m3": 1, "f8e5m2": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
    "half": 2, "float16": 2, "bfloat16": 2, "bf16": 2, "fp16": 2,
    "int32": 4, "uint32": 4, "int": 4, "float": 4, "float32": 4,
    "int64": 8, "uint64": 8, "double": 8, "float64": 8,
}  # fmt: skip
# Collectives whose printed count is size / word size / nranks (checked against nccl-tests' getCollByteCount).
_COUNT_DIVIDED_BY_RANKS = frozenset({"all_gather", "reduce_scatter", "alltoall"})
_MAX_LISTED_FAILURES = 20


def parse_nccl_output(text: str) -> NcclResult:
    """Parse one nccl-tests log. Never raises on odd input: what it cannot read ends up in errors or warnings."""
    state = _State()
    for raw_line in text.splitlines():
        state.feed(raw_line)
    return state.finish()


@dataclass
class _RowCandidate:
    row: NcclRow
    label: str | None
    approximate_counts: bool
    legacy_error: bool
    over_threshold: bool


@dataclass
class _State:
    details: NcclRunDetails = field(default_factory=NcclRunDetails)
    test_from_banner: str | None = None
    test_from_command: str | None = None
    tests_banner_names: list[str] = field(default_factory=list)
    nccl_version: str | None = None
    library_code_version: str | None = None
    rows: list[_RowCandidate] = field(default_factory=list)
    table_header_seen: bool = False
    pending_tokens: list[str] | None = None
    pending_label: str | None = None
    open_row: bool = False  # the last row lacks its in-place half and the next value line may supply it
    out_of_bounds: int | None = None
    avg_busbw: float | None = None
    avg_status: str | None = None
    avg_unreadable: str | None = None
    failures: list[str] = field(default_factory=list)
    nccl_warnings: list[str] = field(default_factory=list)

    # -- line handling ------------------------------------------------------------------------
    def feed(self, raw_line: str) -> None:
        label, line = _strip_launcher_prefixes(raw_line.rstrip())
        for part in _split_glued_debug(line):
            self._feed_part(label, part)

    def _feed_part(self, label: str | None, line: str) -> None:
        body = _MARKDOWN_QUOTE.sub("", line, count=1).strip() if line.lstrip().startswith(">") else line.strip()
        content = body.lstrip("#").strip() if body.startswith("#") else body
        if not content:
            return
        if _NCCL_DEBUG.search(content) or "NCCL INFO" in content:
            self._debug_line(content)
            return
        if self._header_or_trailer(content):
            return
        if _FAILURES.search(content):
            self.failures.append(content)
            return
        if _NCCL_WARN.search(content):
            self.nccl_warnings.append(content)
            return
        if self._table_line(label, content):
            return
        version = _LIBRARY_VERSION.search(content)
        if version:
            self._library_version(version)
            return
        command = _COMMAND.search(content)
        if command and self.test_from_command is None:
            self.test_from_command = command.group(1)
            self.details.command = content

    def _debug_line(self, content: str) -> None:
        version = _LIBRARY_VERSION.search(content)
        if version:
            self._library_version(version)
        if _NCCL_WARN.search(content):
            self.nccl_warnings.append(content)
        elif _FAILURES.search(content):
            self.failures.append(content)

    def _library_version(self, match: re.Match[str]) -> None:
        if self.nccl_version is None:
            self.nccl_version = match.group(1)
            if match.group(2):
                self.details.cuda_version = match.group(2)
        elif self.nccl_version != match.group(1):
            self.details.warnings.append(
                f"several NCCL versions in the log: {self.nccl_version} and {match.group(1)}; kept the first"
            )

    def _header_or_trailer(self, content: str) -> bool:
        if m := _COLLECTIVE_TEST.match(content):
            self.tests_banner_names.append(m.group(1))
            if self.test_from_banner is None:
                self.test_from_banner = m.group(1)
            return True
        if m := _TESTS_VERSION.match(content):
            self.details.nccl_tests_version = m.group(1)
            self.details.tests_version_line = content
            if code := _NCCL_LIBRARY_CODE.search(m.group(2)):
                self.library_code_version = _nccl_version_from_code(int(code.group(1)))
            return True
        if m := _RCCL_TESTS_VERSION.match(content):
            self.details.nccl_tests_version = f"rccl-tests {m.group(1)}"
            self.details.tests_version_line = content
            return True
        if _PARAMETERS.match(content):
            self.details.parameters = _parse_parameters(content)
            return True
        if m := _REDUCED_MAX_BYTES.search(content):
            self.details.max_bytes_reduced_to = int(m.group(1))
            return True
        if content == "Using devices":
            return True
        if m := _DEVICE.match(content):
            self.details.devices.append(
                NcclDevice(
                    rank=int(m.group(1)),
                    group=int(m.group(2)) if m.group(2) is not None else None,
                    pid=int(m.group(3)),
                    host=m.group(4),
                    gpu_index=int(m.group(5)),
                    pci_bus_id=m.group(6),
                    name=m.group(7),
                )
            )
            return True
        if _GROUP_HEADER.match(content) or _UNITS_HEADER.match(content):
            self.table_header_seen = True
            return True
        if _COLUMN_HEADER.match(content):
            self.table_header_seen = True
            self._column_header(content.split())
            return True
        if m := _OUT_OF_BOUNDS.match(content):
            self.out_of_bounds = int(m.group(1))
            self.details.out_of_bounds_status = m.group(2)
            self._close_pending()
            return True
        if m := _AVG_BUSBW.match(content):
            self._avg_line(m.group(1), m.group(2))
            self._close_pending()
            return True
        return False

    def _column_header(self, words: list[str]) -> None:
        # Columns after type (and redop/root): time algbw busbw <wrong> [time algbw busbw <wrong>].
        if "algbw" in words:
            time_index = words.index("algbw") - 1
            self.details.time_column = words[time_index]
        wrong_names = [w for w in words if w in {"#wrong", "error", "res"}]
        if wrong_names:
            self.details.wrong_column = wrong_names[0]

    def _avg_line(self, value: str, status: str | None) -> None:
        self.details.avg_busbw_printed = value
        self.avg_status = status
        try:
            parsed = float(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed != parsed or parsed in (float("inf"), float("-inf")):
            self.avg_unreadable = value
        else:
            self.avg_busbw = parsed

    # -- table rows ---------------------------------------------------------------------------
    def _table_line(self, label: str | None, content: str) -> bool:
        tokens = content.split()
        if self.pending_tokens is not None and all(is_value(t) for t in tokens):
            tokens = self.pending_tokens + tokens
            label = self.pending_label
            self.pending_tokens = None
        elif self.open_row and self.rows and len(tokens) == 4 and all(is_value(t) for t in tokens):
            return self._attach_in_place(tokens)
        if not looks_like_row_start(tokens):
            return False
        self._close_pending()
        parsed = parse_row(tokens)
        if parsed is None:
            # The row may continue on the next line (NCCL debug output cut it in two).
            self.pending_tokens = tokens
            self.pending_label = label
            return True
        row, approximate, legacy, over = parsed
        self.rows.append(_RowCandidate(row, label, approximate, legacy, over))
        self.open_row = row.in_place is None
        return True

    def _attach_in_place(self, tokens: list[str]) -> bool:
        measurement = parse_measurement(tokens)
        if measurement is None:
            return False
        last = self.rows[-1]
        last.row = last.row.model_copy(update={"in_place": measurement[0]})
        last.legacy_error = last.legacy_error or measurement[1]
        last.over_threshold = last.over_threshold or measurement[2]
        self.open_row = False
        return True

    def _close_pending(self) -> None:
        self.open_row = False
        if self.pending_tokens is not None:
            self.details.warnings.append(f"unreadable table row: {' '.join(self.pending_tokens)}")
            self.pending_tokens = None

    # -- result ---------------------------------------------------------------------------------
    def finish(self) -> NcclResult:
        self._close_pending()
        details = self.details
        errors: list[str] = []

        for line in self.failures[:_MAX_LISTED_FAILURES]:
            errors.append(f"run failed: {line}")
        if len(self.failures) > _MAX_LISTED_FAILURES:
            errors.append(f"run failed: ... and {len(self.failures) - _MAX_LISTED_FAILURES} more failure lines")
        if self.failures:
            errors.extend(f"before the failure: {w}" for w in self.nccl_warnings[:_MAX_LISTED_FAILURES])
        else:
            details.warnings.extend(self.nccl_warnings)

        candidates = self._rows_of_one_process(errors)
        rows = [c.row for c in candidates]

        if not rows:
            if self.table_header_seen:
                errors.append(
                    "the result table header was printed but no data rows followed: the run failed or was cut off"
                )
            else:
                errors.append("no nccl-tests result table found in the text")

        for c in candidates:
            for half, m in (("out-of-place", c.row.out_of_place), ("in-place", c.row.in_place)):
                if m is not None and m.wrong:
                    errors.append(f"{c.row.size_bytes} B {c.row.type} {half}: {m.wrong} wrong elements")
            if c.over_threshold:
                errors.append(f"{c.row.size_bytes} B {c.row.type}: error marked with '*' (over the maximum threshold)")
        if any(c.legacy_error for c in candidates):
            details.warnings.append(
                "the table uses the legacy 'error' column (a relative delta, not a count): #wrong is null; "
                "the out-of-bounds line is the correctness signal"
            )
        if any(c.approximate_counts for c in candidates):
            details.warnings.append("sizes or counts printed in e-notation are rounded to the printed digits")

        if self.out_of_bounds is not None and (self.out_of_bounds != 0 or details.out_of_bounds_status == "FAILED"):
            errors.append(f"out of bounds values: {self.out_of_bounds} {details.out_of_bounds_status or ''}".rstrip())
        if self.avg_status == "FAILED":
            errors.append(f"average bus bandwidth {details.avg_busbw_printed} is below NCCL_TESTS_MIN_BW (FAILED)")
        if self.avg_unreadable is not None:
            errors.append(f"average bus bandwidth printed as '{self.avg_unreadable}': no usable value")
        elif rows and self.avg_busbw is None:
            errors.append(
                "the log ends before the 'Avg bus bandwidth' line: the run was cut off or killed, average unknown"
            )
        if rows and self.out_of_bounds is None and self.avg_busbw is not None:
            details.warnings.append("no 'Out of bounds values' line")

        if details.parameters is not None and details.parameters.validation == 0:
            details.warnings.append("validation was off (-c 0): results were not checked for wrong elements")

        test = self.test_from_banner or self.test_from_command
        if len(set(self.tests_banner_names)) > 1:
            details.warnings.append(
                f"several tests in one log: {sorted(set(self.tests_banner_names))}; rows of all kept"
            )

        nccl_version = self.nccl_version or self.library_code_version
        if self.nccl_version and self.library_code_version and self.nccl_version != self.library_code_version:
            details.warnings.append(
                f"NCCL version line says {self.nccl_version}, nccl-tests reports library {self.library_code_version}"
            )

        ranks = _ranks_from_devices(details.devices)
        if ranks is not None:
            details.ranks_source = "device_list"
        else:
            ranks = _infer_ranks_from_counts(candidates, test)
            if ranks is not None:
                details.ranks_source = "inferred_from_counts"

        return NcclResult(
            test=test,
            nccl_version=nccl_version,
            ranks=ranks,
            rows=rows,
            avg_busbw_gbps=self.avg_busbw,
            out_of_bounds=self.out_of_bounds,
            errors=errors,
            ok=not errors,
            details=details,
        )

    def _rows_of_one_process(self, errors: list[str]) -> list[_RowCandidate]:
        """With MPI only rank 0 prints the table; tables from several labels mean separate 1-process runs."""
        labels = list(dict.fromkeys(c.label for c in self.rows))
        if len(labels) <= 1:
            return self.rows
        errors.append(
            f"result rows printed by several processes ({', '.join(str(label) for label in labels)}): each ran its own "
            f"test instead of one job (nccl-tests built without MPI?); kept the rows of {labels[0]}"
        )
        return [c for c in self.rows if c.label == labels[0]]


# ---- helpers -----------------------------------------------------------------------------------
def _strip_launcher_prefixes(line: str) -> tuple[str | None, str]:
    label: str | None = None
    for _ in range(4):
        if m := _TAG_OUTPUT.match(line):
            label = label or f"[{m.group(1)},{m.group(2)}]"
            line = line[m.end() :]
        elif m := _SRUN_LABEL.match(line):
            label = label or f"{m.group(1)}:"
            line = line[m.end() :]
        elif m := _ISO_TIMESTAMP.match(line):
            line = line[m.end() :]
        else:
            break
    return label, line


def _split_glued_debug(line: str) -> list[str]:
    m = _NCCL_DEBUG.search(line)
    if m is None or not line[: m.start()].strip():
        return [line]
    return [line[: m.start()], line[m.start() :]]


def _parse_parameters(content: str) -> NcclParameters:
    params = NcclParameters()
    known_words = {"nThread": "n_threads", "nGpus": "n_gpus", "minBytes": "min_bytes", "maxBytes": "max_bytes"}
    for word in _PARAM_WORD.finditer(content):
        setattr(params, known_words[word.group(1)], int(word.group(2)))
    if step := _PARAM_STEP.search(content):
        params.step = int(step.group(1))
        params.step_kind = "factor" if step.group(2) == "factor" else "bytes"
    known_colon = {
        "warmup iters": "warmup_iters",
        "iters": "iters",
        "agg iters": "agg_iters",
        "validation": "validation",
        "graph": "graph",
    }
    for m in _PARAM_COLON.finditer(content):
        key, value = m.group(1), m.group(2)
        if key == "step":
            continue
        if key in known_colon and _INTEGER.match(value):
            setattr(params, known_colon[key], int(value))
        else:
            params.other[key] = value
    return params


def _nccl_version_from_code(code: int) -> str:
    # NCCL_VERSION(X,Y,Z) is X*10000+Y*100+Z from 2.9 on, X*1000+Y*100+Z before.
    if code >= 20900:
        return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    return f"{code // 1000}.{code % 1000 // 100}.{code % 100}"


def _ranks_from_devices(devices: list[NcclDevice]) -> int | None:
    return len({d.rank for d in devices}) or None


def _collective(test: str | None) -> str | None:
    if test is None:
        return None
    m = re.match(r"^(\w+?)_perf", test)
    return m.group(1) if m else None


def _infer_ranks_from_counts(candidates: list[_RowCandidate], test: str | None) -> int | None:
    """all_gather, reduce_scatter and alltoall print count = size / word size / nranks.

    With the test unknown, the bus/alg bandwidth ratio of (n-1)/n (< 1) identifies those collectives,
    and the inferred n must agree with it.
    """
    collective = _collective(test)
    if collective is not None and collective not in _COUNT_DIVIDED_BY_RANKS:
        return None
    inferred: set[int] = set()
    for c in candidates:
        word = _WORD_SIZES.get(c.row.type)
        if word is None or c.approximate_counts or c.row.count <= 0:
            continue
        ranks, remainder = divmod(c.row.size_bytes, c.row.count * word)
        if remainder or ranks < 1:
            return None
        inferred.add(ranks)
    if len(inferred) != 1:
        return None
    ranks = inferred.pop()
    if collective is None:
        largest = max(candidates, key=lambda c: c.row.size_bytes).row.out_of_place
        if largest.algbw_gbps <= 0 or ranks < 2:
            return None
        ratio = largest.busbw_gbps / largest.algbw_gbps
        if not 0 < ratio < 1 or abs(ratio - (ranks - 1) / ranks) > 0.01:
            return None
    return ranks
