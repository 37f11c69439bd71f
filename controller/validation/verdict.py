"""Judge one parsed nccl-tests run against the expected bus bandwidth."""

from __future__ import annotations

from typing import Any

from drivers.nccl import NcclResult, largest_rows, row_busbw

# busbw plateaus at the largest sizes; judging the mean of the two largest keeps one noisy row from
# deciding alone while staying on the plateau.
JUDGED_SIZES = 2


def judge(
    result: NcclResult | None,
    expected_busbw_gbps: float | None,
    pass_ratio: float,
    *,
    expected_source: str = "",
    run_failed: str | None = None,
) -> dict[str, Any]:
    """The verdict with its evidence. ``passed`` is None when the run cannot be judged (no log at all)."""
    reasons: list[str] = []
    evidence: dict[str, Any] = {
        "expected_busbw_gbps": expected_busbw_gbps,
        "expected_source": expected_source,
        "pass_ratio": pass_ratio,
        "threshold_busbw_gbps": round(expected_busbw_gbps * pass_ratio, 3) if expected_busbw_gbps else None,
        "measured_busbw_gbps": None,
        "measured_rows": [],
        "ratio": None,
        "avg_busbw_gbps": None,
        "wrong_rows": [],
        "errors": [],
        "run_failed": run_failed,
    }
    if result is None:
        evidence["passed"] = None
        evidence["reasons"] = [run_failed or "no output to judge"]
        return evidence
    evidence["avg_busbw_gbps"] = result.avg_busbw_gbps
    evidence["errors"] = list(result.errors)
    wrong = [
        {
            "size_bytes": row.size_bytes,
            "type": row.type,
            "out_of_place": row.out_of_place.wrong,
            "in_place": row.in_place.wrong if row.in_place else None,
        }
        for row in result.rows
        if (row.out_of_place.wrong or 0) > 0 or (row.in_place is not None and (row.in_place.wrong or 0) > 0)
    ]
    evidence["wrong_rows"] = wrong
    if wrong:
        reasons.append(f"{len(wrong)} row(s) with wrong elements: data corruption")
    if result.errors:
        reasons.append("the run reported errors: " + "; ".join(result.errors[:3]))
    if run_failed and not result.errors:
        reasons.append(run_failed)
    rows = largest_rows(result, JUDGED_SIZES)
    if rows:
        measured = round(sum(row_busbw(r) for r in rows) / len(rows), 3)
        evidence["measured_busbw_gbps"] = measured
        evidence["measured_rows"] = [{"size_bytes": r.size_bytes, "busbw_gbps": row_busbw(r)} for r in rows]
        if expected_busbw_gbps:
            ratio = round(measured / expected_busbw_gbps, 4)
            evidence["ratio"] = ratio
            if ratio < pass_ratio:
                reasons.append(
                    f"busbw {measured:g} GB/s at the largest sizes is {ratio:.0%} of the expected "
                    f"{expected_busbw_gbps:g} GB/s (needs {pass_ratio:.0%})"
                )
    elif not result.errors:
        reasons.append("no result rows")
    if expected_busbw_gbps is None and not reasons:
        # Correct data but nothing to compare the bandwidth with: not a pass, and no reason to quarantine.
        evidence["passed"] = None
        evidence["reasons"] = [f"cannot judge bandwidth: {expected_source or 'no expected busbw'}"]
        return evidence
    evidence["passed"] = not reasons
    evidence["reasons"] = reasons
    return evidence
