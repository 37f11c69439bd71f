"""The lease request a `gpufabric lease create` command line means, in the API's request language
(docs/placement.md). The controller validates it; here only the shape of the command line is checked and
numbers are sent as numbers (the API takes ``"count": "2"`` as an error, not as 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from controller.cli.common import REFUSED, fail

SLICE_EXAMPLE = "kind=gpu,model=A100,count=2"
INTEGER_KEYS = ("count",)
NUMBER_KEYS = ("min_memory_gib",)


def parse_slice(spec: str) -> dict[str, Any]:
    """``kind=mig,profile=3g.40gb,model=A100`` -> ``{"kind": "mig", "profile": "3g.40gb", "model": "A100"}``."""
    out: dict[str, Any] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or not key or not value:
            raise fail(f"--slice {spec!r}: expected key=value pairs such as {SLICE_EXAMPLE}", REFUSED)
        if key in out:
            raise fail(f"--slice {spec!r}: {key} is given twice", REFUSED)
        out[key] = _value(spec, key, value)
    if "kind" not in out:
        raise fail(
            f"--slice {spec!r}: kind is missing (gpu, mig, timeslice, mps or vgpu), e.g. {SLICE_EXAMPLE}", REFUSED
        )
    return out


def _value(spec: str, key: str, value: str) -> Any:
    try:
        if key in INTEGER_KEYS:
            return int(value)
        if key in NUMBER_KEYS:
            return float(value)
    except ValueError:
        kind = "a whole number" if key in INTEGER_KEYS else "a number"
        raise fail(f"--slice {spec!r}: {key} must be {kind}, not {value!r}", REFUSED) from None
    return value


def duration(value: str) -> int | str:
    """Seconds as a number, anything else (ISO 8601, e.g. PT8H) as the API's string."""
    return int(value) if value.isdigit() else value


def read_file(path: str) -> dict[str, Any]:
    """A request document from a JSON file, or from standard input for ``-``."""
    where = "standard input" if path == "-" else path
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {where}: {exc.strerror or exc}", REFUSED) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise fail(f"{where} is not JSON: {exc}", REFUSED) from None
    if not isinstance(data, dict):
        raise fail(f"{where} must hold a JSON object (the lease request, see docs/placement.md)", REFUSED)
    return data


def request_body(
    file: str | None,
    slices: list[str],
    *,
    nodes: int | None = None,
    topology: str | None = None,
    backends: list[str] | None = None,
    regions: list[str] | None = None,
    azs: list[str] | None = None,
    require_validated: bool = False,
    policy: str | None = None,
    duration_s: str | None = None,
) -> dict[str, Any]:
    """The request: the file's document (if any) with the command line's fields on top (``--slice`` replaces
    the file's slices)."""
    body = read_file(file) if file else {}
    if slices:
        body["slices"] = [parse_slice(s) for s in slices]
    given: dict[str, Any] = {
        "nodes": nodes,
        "topology": topology,
        "backends": backends or None,
        "regions": regions or None,
        "azs": azs or None,
        "policy": policy,
        "duration": duration(duration_s) if duration_s is not None else None,
    }
    body.update({key: value for key, value in given.items() if value is not None})
    if require_validated:
        body["require_validated"] = True
    if "slices" not in body:
        raise fail(f"nothing to place: give --slice {SLICE_EXAMPLE} (repeatable) or --file request.json", REFUSED)
    return body
