"""MIG for the placement engine: the one MIG scorer, shared with the node agent, and where a host's profiles can
still be created (``HostPlaces``), which only the engine knows.

The scorer (free placements, dead slices, potential, ``host_cost``, ``best_placement``) lives in
``drivers.gpus.mig_score`` so that the agent's MIG planner decides with the same terms; it is re-exported here so
the engine keeps calling ``mig.host_cost`` and friends. Models are catalog model names (``drivers.gpus.mig.geometry``,
the same facts the simulated NVML uses); every scorer function is a pure, memoised function of ``(model, layout)``.
Only ``HostPlaces`` looks beyond one GPU (the host's other GPUs and, through the engine's index, other hosts), and
only when a placement would take a GPU's last place of a profile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from drivers.gpus.mig import geometry
from drivers.gpus.mig_score import (
    Layout,
    Places,
    add,
    best_placement,
    creatable,
    dead_slices,
    first_placement,
    free_placements,
    host_cost,
    last_places_taken,
    placement_cost,
    potential,
    remove,
)

__all__ = [
    "HostPlaces",
    "Layout",
    "Places",
    "add",
    "best_placement",
    "creatable",
    "dead_slices",
    "first_placement",
    "free_placements",
    "geometry",
    "host_cost",
    "last_places_taken",
    "placement_cost",
    "potential",
    "remove",
]


class HostPlaces:
    """Where a host's profiles can still be created, counted on first use: its GPUs (``gpus``: model and layout
    each) plus, through ``elsewhere(model, profile)``, whether another host can create the profile."""

    def __init__(self, gpus: Sequence[tuple[str, Layout]], elsewhere: Callable[[str, str], bool]) -> None:
        self.gpus = gpus
        self.elsewhere = elsewhere
        self._on_host: dict[tuple[str, str], int] = {}

    def _count(self, model: str, profile: str) -> int:
        n = self._on_host.get((model, profile))
        if n is None:
            n = self._on_host[(model, profile)] = sum(creatable(m, g, profile) for m, g in self.gpus if m == model)
        return n

    def outside(self, model: str, layout: Layout) -> Places:
        """``profile -> places`` beyond the GPU whose layout is ``layout`` (one of ``gpus``)."""

        seen: dict[str, int] = {}

        def places(profile: str) -> int:
            n = seen.get(profile)
            if n is None:
                n = self._count(model, profile) - creatable(model, layout, profile)
                n = seen[profile] = n if n else int(self.elsewhere(model, profile))
            return n

        return places
