"""Small views over a parsed result that verdicts need (issue 8, part 3)."""

from __future__ import annotations

from drivers.nccl.models import NcclResult, NcclRow


def row_busbw(row: NcclRow) -> float:
    """The better of the row's out-of-place and in-place bus bandwidth, in GB/s."""
    if row.in_place is None:
        return row.out_of_place.busbw_gbps
    return max(row.out_of_place.busbw_gbps, row.in_place.busbw_gbps)


def largest_rows(result: NcclResult, n: int) -> list[NcclRow]:
    """The rows of the `n` largest message sizes, largest first.

    Bandwidth only approaches the link rate at large sizes, so verdicts judge these rows. When the
    log holds several data types or ops per size, every row of a selected size is returned.
    """
    if n <= 0:
        return []
    sizes = sorted({row.size_bytes for row in result.rows}, reverse=True)[:n]
    chosen = set(sizes)
    return sorted((row for row in result.rows if row.size_bytes in chosen), key=lambda row: -row.size_bytes)


def peak_busbw(result: NcclResult) -> float | None:
    """The highest bus bandwidth of any row (out-of-place or in-place), or None without rows."""
    if not result.rows:
        return None
    return max(row_busbw(row) for row in result.rows)
