"""Geometry of the dashboard's SVG drawings, as plain data the templates place: pure functions, tested directly.

- A GPU: MIG instances on the GPU's memory-slice geometry from the GPU catalog (an instance at placement start
  ``s`` of size ``n`` on a GPU of ``S`` slices is drawn at ``x = s/S`` of the width, ``n/S`` wide), free slices,
  time-slice replicas, vGPU instances, or the whole GPU; each part names the lease holding it.
- An NCCL run: busbw against message size on a log2 size axis, with the expected and pass-threshold lines.
- A refusal funnel: candidates left after each placement filter.
- Timelines: lease state transitions, health events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.placement.mig import geometry

GPU_WIDTH = 480.0
GPU_HEIGHT = 56.0


@dataclass(frozen=True)
class Part:
    """One rectangle of a GPU drawing."""

    x: float
    width: float
    label: str
    title: str
    state: str  # leased | free | busy | idle | gpu
    lease: str | None = None
    start: int | None = None
    size: int | None = None


@dataclass
class GpuDrawing:
    uuid: str
    index: int
    model: str
    kind: str  # mig | timeslice | vgpu | whole
    slices: int
    parts: list[Part] = field(default_factory=list)
    health: str = "healthy"
    admin_state: str = "active"

    @property
    def ticks(self) -> list[float]:
        return [GPU_WIDTH * i / self.slices for i in range(1, self.slices)] if self.kind == "mig" else []


def _offer_count(slices: list[dict[str, Any]], kind: str) -> int:
    return sum(int(s.get("count") or 0) for s in slices if s.get("kind") == kind)


def gpu_drawing(device: dict[str, Any], claims: dict[tuple[str, int], str]) -> GpuDrawing:
    """``device`` as ``GET /v1/hosts/{host}`` answers it; ``claims`` maps ``(resource, slot)`` of live slice claims
    (``controller.store.models.SliceClaim``) to the lease holding it."""
    uuid, model = device["uuid"], device["model"]
    common = {"uuid": uuid, "index": device["index"], "model": model}
    common_state = {"health": device.get("health", "healthy"), "admin_state": device.get("admin_state", "active")}
    instances = device.get("mig_instances") or []
    if device.get("mig_mode") == "enabled" or instances:
        return GpuDrawing(**common, kind="mig", slices=_memory_slices(model, instances),
                          parts=_mig_parts(uuid, instances, claims, _memory_slices(model, instances)),
                          **common_state)  # fmt: skip
    offers = device.get("slices") or []
    for kind, resource, word in (
        ("timeslice", "share", "replica"),
        ("mps", "share", "MPS share"),
        ("vgpu", "vgpu", "vGPU"),
    ):
        count = _offer_count(offers, kind)
        if count:
            label = "vgpu" if kind == "vgpu" else "timeslice"
            parts = [_unit(i, count, claims.get((f"{resource}:{uuid}", i)), f"{word} {i}") for i in range(count)]
            return GpuDrawing(**common, kind=label, slices=count, parts=parts, **common_state)
    lease = claims.get((f"gpu:{uuid}", 0))
    whole = Part(0.0, GPU_WIDTH, "whole GPU", f"GPU {device['index']}: {'lease ' + lease if lease else 'free'}",
                 "leased" if lease else "free", lease)  # fmt: skip
    return GpuDrawing(**common, kind="whole", slices=1, parts=[whole], **common_state)


def _unit(i: int, count: int, lease: str | None, name: str) -> Part:
    width = GPU_WIDTH / count
    title = f"{name}: {'lease ' + lease if lease else 'free'}"
    return Part(i * width, width, name, title, "leased" if lease else "free", lease, i, 1)


def _memory_slices(model: str, instances: list[dict[str, Any]]) -> int:
    geom = geometry(model)
    if geom is not None:
        return geom.memory_slices
    # Not in the catalog: the extent the instances themselves cover (at least the A100/H100 eight).
    return max([8, *(int(m["placement_start"]) + int(m["placement_size"]) for m in instances)])


def _mig_parts(
    uuid: str, instances: list[dict[str, Any]], claims: dict[tuple[str, int], str], slices: int
) -> list[Part]:
    unit = GPU_WIDTH / slices
    parts: list[Part] = []
    covered: set[int] = set()
    for m in sorted(instances, key=lambda m: int(m["placement_start"])):
        start, size = int(m["placement_start"]), int(m["placement_size"])
        covered.update(range(start, start + size))
        lease = next(
            (claims[(f"mig:{uuid}", s)] for s in range(start, start + size) if (f"mig:{uuid}", s) in claims), None
        )
        state = "leased" if lease else ("busy" if m.get("busy") else "idle")
        holder = f"lease {lease}" if lease else ("busy (processes running), no lease" if m.get("busy") else "no lease")
        title = f"{m['profile']} at placement {start}, size {size} ({m.get('uuid') or 'no UUID yet'}): {holder}"
        parts.append(Part(start * unit, size * unit, m["profile"], title, state, lease, start, size))
    run: list[int] = []
    for s in [*range(slices), slices]:  # the sentinel closes the last run
        if s < slices and s not in covered:
            run.append(s)
            continue
        if run:
            title = f"free: memory slices {run[0]}–{run[-1]} (no instance)"
            parts.append(Part(run[0] * unit, len(run) * unit, "free", title, "free", None, run[0], len(run)))
            run = []
    return parts


# -- NCCL bus bandwidth curve ----------------------------------------------------------------------------

CHART_W, CHART_H = 640.0, 300.0
PAD_L, PAD_R, PAD_T, PAD_B = 56.0, 16.0, 16.0, 44.0


@dataclass
class Chart:
    points: list[tuple[float, float, int, float]]  # x, y, size_bytes, busbw
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    expected_y: float | None
    threshold_y: float | None
    width: float = CHART_W
    height: float = CHART_H

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y, _, _) in enumerate(self.points))


def human_bytes(n: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}"


def row_busbw(row: dict[str, Any]) -> float:
    """Out-of-place and in-place busbw: the better of the two, as nccl-tests' reading of a link."""
    values = [float(m["busbw_gbps"]) for m in (row.get("out_of_place"), row.get("in_place")) if m]
    return max(values) if values else 0.0


def nccl_chart(rows: list[dict[str, Any]], expected: float | None, threshold: float | None) -> Chart | None:
    measured = [(int(r["size_bytes"]), row_busbw(r)) for r in rows if int(r["size_bytes"]) > 0]
    if not measured:
        return None
    lo, hi = math.log2(measured[0][0]), math.log2(measured[-1][0])
    span = max(hi - lo, 1.0)
    top = max([b for _, b in measured] + [expected or 0.0, threshold or 0.0, 1.0]) * 1.1
    plot_w, plot_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B

    def sx(size: int) -> float:
        return PAD_L + (math.log2(size) - lo) / span * plot_w

    def sy(value: float) -> float:
        return PAD_T + plot_h - value / top * plot_h

    points = [(sx(s), sy(b), s, b) for s, b in measured]
    step = max(1, math.ceil(span / 8))
    x_ticks = [(sx(1 << e), human_bytes(1 << e)) for e in range(math.ceil(lo), math.floor(hi) + 1, step)]
    magnitude = 10 ** math.floor(math.log10(top / 5)) if top > 0 else 1
    y_step = next(m * magnitude for m in (1, 2, 5, 10) if top / (m * magnitude) <= 6)
    y_ticks = [(sy(v * y_step), f"{v * y_step:g}") for v in range(int(top // y_step) + 1)]
    return Chart(
        points,
        x_ticks,
        y_ticks,
        sy(expected) if expected else None,
        sy(threshold) if threshold else None,
    )


# -- refusal funnel --------------------------------------------------------------------------------------

FUNNEL_W = 560.0


@dataclass(frozen=True)
class FunnelStep:
    filter: str
    removed_hosts: int
    removed_devices: int
    left_hosts: int
    bar: float  # width of the bar of hosts left after this filter
    examples: list[str]


def candidate_hosts(candidates: Any) -> int:
    """Hosts considered: the API answers ``candidates`` as ``{hosts, devices, ...}`` (a bare count is accepted)."""
    if isinstance(candidates, dict):
        return int(candidates.get("hosts") or 0)
    return int(candidates or 0)


def funnel_steps(candidates: int, filters: list[dict[str, Any]]) -> list[FunnelStep]:
    """Hosts left after each filter, in the order placement applies them (only filters that removed some)."""
    left = candidates
    steps: list[FunnelStep] = []
    scale = FUNNEL_W / candidates if candidates else 0.0
    for f in filters:
        removed = int(f.get("removed_hosts") or 0)
        devices = int(f.get("removed_devices") or 0)
        if not removed and not devices:
            continue
        left = max(0, left - removed)
        steps.append(
            FunnelStep(
                f["filter"], removed, devices, left, left * scale, list(f.get("examples") or f.get("reasons") or [])
            )
        )
    return steps


# -- timelines -------------------------------------------------------------------------------------------

TIMELINE_W = 560.0


@dataclass(frozen=True)
class Mark:
    x: float
    label: str
    at: datetime
    detail: str


def timeline(events: list[tuple[datetime, str, str]], end: datetime) -> list[Mark]:
    """Events (time, label, detail) placed on a time axis from the first event to ``end``."""
    if not events:
        return []
    ordered = sorted(events, key=lambda e: e[0])
    first = ordered[0][0]
    span = max((end - first).total_seconds(), 1e-3)
    return [
        Mark(16 + (at - first).total_seconds() / span * (TIMELINE_W - 32), label, at, detail)
        for at, label, detail in ordered
    ]
