"""nccl-tests output: parse it into a result a verdict can judge."""

from drivers.nccl.models import (
    NcclDevice,
    NcclMeasurement,
    NcclParameters,
    NcclResult,
    NcclRow,
    NcclRunDetails,
)
from drivers.nccl.parser import parse_nccl_output
from drivers.nccl.summary import largest_rows, peak_busbw, row_busbw

__all__ = [
    "NcclDevice",
    "NcclMeasurement",
    "NcclParameters",
    "NcclResult",
    "NcclRow",
    "NcclRunDetails",
    "largest_rows",
    "parse_nccl_output",
    "peak_busbw",
    "row_busbw",
]
