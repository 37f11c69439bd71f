"""One row of an nccl-tests table: its tokens as numbers, the out-of-place and in-place measurements, and whether a
line looks like a row at all (a row's values may be glued to debug output or carry launcher prefixes)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from drivers.nccl.models import NcclMeasurement, NcclRow

_NUMBER = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^-?\d+$")
_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_WRONG = re.compile(r"^(?:N/A|-?\d+|-?\d+(?:\.\d*)?[eE][+-]?\d+)\*?$")


def is_value(token: str) -> bool:
    return bool(_NUMBER.match(token) or _WRONG.match(token))


def looks_like_row_start(tokens: list[str]) -> bool:
    return len(tokens) >= 3 and bool(_NUMBER.match(tokens[0]) and _NUMBER.match(tokens[1]) and _WORD.match(tokens[2]))


def to_int(token: str) -> tuple[int, bool] | None:
    """(value, approximate). Accepts e-notation, which nccl-tests forks print with %g (6 digits)."""
    if _INTEGER.match(token):
        return int(token), False
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int(value.to_integral_value()), True


def parse_measurement(tokens: list[str]) -> tuple[NcclMeasurement, bool, bool] | None:
    """time algbw busbw wrong -> (measurement, legacy error column, over threshold)."""
    time, algbw, busbw, wrong = tokens
    if not (_NUMBER.match(time) and _NUMBER.match(algbw) and _NUMBER.match(busbw) and _WRONG.match(wrong)):
        return None
    over_threshold = wrong.endswith("*")
    wrong = wrong.rstrip("*")
    legacy = False
    wrong_count: int | None
    if wrong == "N/A":
        wrong_count = None
    elif _INTEGER.match(wrong):
        # Some builds print -1 when the check was skipped.
        wrong_count = int(wrong) if int(wrong) >= 0 else None
    else:
        legacy = True
        wrong_count = None
    measurement = NcclMeasurement(
        time_us=float(time), algbw_gbps=float(algbw), busbw_gbps=float(busbw), wrong=wrong_count
    )
    return measurement, legacy, over_threshold


def parse_row(tokens: list[str]) -> tuple[NcclRow, bool, bool, bool] | None:
    size = to_int(tokens[0])
    count = to_int(tokens[1])
    if size is None or count is None:
        return None
    index = 3
    redop: str | None = None
    if index < len(tokens) and _WORD.match(tokens[index]):
        redop = tokens[index]
        index += 1
    values = tokens[index:]
    if not all(is_value(t) for t in values):
        return None
    root: int | None = None
    if len(values) in (5, 9):
        if not _INTEGER.match(values[0]):
            return None
        root = int(values[0])
        values = values[1:]
    if len(values) not in (4, 8):
        return None
    out_of_place = parse_measurement(values[:4])
    in_place = parse_measurement(values[4:]) if len(values) == 8 else None
    if out_of_place is None or (len(values) == 8 and in_place is None):
        return None
    row = NcclRow(
        size_bytes=size[0],
        count=count[0],
        type=tokens[2],
        redop=redop,
        root=root,
        out_of_place=out_of_place[0],
        in_place=in_place[0] if in_place else None,
    )
    legacy = out_of_place[1] or bool(in_place and in_place[1])
    over = out_of_place[2] or bool(in_place and in_place[2])
    return row, size[1] or count[1], legacy, over
