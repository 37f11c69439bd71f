"""Weighers: rank the candidate hosts (or gangs of hosts) that passed every filter.

Each weigher gives a raw score per candidate (higher is better); scores are min-max normalised over the
candidates and summed with multipliers, as Nova's weighers do. The breakdown is kept on the decision so a
placement can be explained as well as a refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.placement.model import Host
from controller.placement.request import PlacementRequest


class Scored(Protocol):
    host: Host
    free_after: int
    capacity: int
    mig_loss: int


@dataclass(slots=True)
class WeigherConfig:
    """Multipliers; 0 switches a weigher off. The backend preference dominates, as a tenant's stated order."""

    backend_preference: float = 10.0
    region_preference: float = 5.0
    mig_fragmentation: float = 3.0
    pack: float = 1.0
    cost: float = 1.0
    topology: float = 1.0
    default_policy: str = "pack"
    extra: dict[str, float] = field(default_factory=dict)


def _rank(value: str, order: Sequence[str] | None) -> int:
    if not order:
        return 0
    try:
        return order.index(value)
    except ValueError:
        return len(order)


def raw_scores(c: Scored, req: PlacementRequest, policy: str) -> dict[str, float]:
    h = c.host
    backend_rank = min(_rank(h.backend_id, req.backends), _rank(h.backend_kind, req.backends))
    region_rank = min(_rank(h.region, req.regions), _rank(h.az, req.azs))
    # Pack: fewest free units left on the host (fill partly used hosts, keep empty ones whole).
    # Spread: most left. Normalised by what the host has so an 8-GPU host and a 4-GPU host compare.
    share_left = c.free_after / c.capacity if c.capacity else 0.0
    return {
        "backend_preference": -backend_rank,
        "region_preference": -region_rank,
        "mig_fragmentation": -c.mig_loss,
        "pack": -share_left if policy == "pack" else share_left,
        "cost": -h.cost,
    }


def weigh(cands: Sequence[Scored], req: PlacementRequest, cfg: WeigherConfig, policy: str) -> list[dict[str, float]]:
    """Normalised weighted scores per candidate (same order), each with a ``total``."""
    raws = [raw_scores(c, req, policy) for c in cands]
    if not raws:
        return []
    mult = {
        "backend_preference": cfg.backend_preference,
        "region_preference": cfg.region_preference,
        "mig_fragmentation": cfg.mig_fragmentation,
        "pack": cfg.pack,
        "cost": cfg.cost,
        **cfg.extra,
    }
    out: list[dict[str, float]] = [{} for _ in raws]
    for name in raws[0]:
        vals = [r[name] for r in raws]
        lo, hi = min(vals), max(vals)
        for i, v in enumerate(vals):
            norm = 0.0 if hi == lo else (v - lo) / (hi - lo)
            out[i][name] = round(norm * mult.get(name, 1.0), 4)
    for o in out:
        o["total"] = round(sum(o.values()), 4)
    return out


def topology_score(spare_hosts: int) -> float:
    """For a gang: prefer the domain with the fewest spare fitting hosts, keeping big empty domains for big gangs."""
    return -float(spare_hosts)
