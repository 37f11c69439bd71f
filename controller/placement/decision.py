"""What the placement engine answers: a ``Decision`` (hosts, allocations, MIG actions) or a ``Refusal``, the
``Claim`` it makes of a decision, and its errors. Plain data; ``controller.placement.engine`` makes them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from controller.placement import mig
from controller.placement.funnel import Funnel
from controller.placement.model import Host, SliceKind
from controller.placement.request import PlacementRequest


class PlacementError(Exception):
    """Base of the placement engine's errors."""


class ClaimConflict(PlacementError):
    """The index changed between decide and claim: something the decision takes is no longer free."""


class UnknownClaim(PlacementError):
    pass


@dataclass(frozen=True, slots=True)
class Allocation:
    """One thing a decision takes: the unit the store claims with a conditional UPDATE / row lock."""

    host_id: str
    device_uuid: str
    kind: SliceKind
    model: str
    units: int = 1  # 1 for gpu and mig; replicas for timeslice/mps; instances for vgpu
    slice_index: int = 0  # which entry of request.slices this serves
    profile: str | None = None
    placement: tuple[int, int] | None = None  # MIG (start, size) in memory slices
    mig_uuid: str | None = None  # existing MIG instance; None when it is to be created
    create: bool = False  # MIG instance created on demand for this claim
    vgpu_type: str | None = None


@dataclass(frozen=True, slots=True)
class MigCreate:
    """Desired-state action for the host's agent: create this GPU instance (and its full compute instance)."""

    host_id: str
    device_uuid: str
    profile: str
    profile_id: int
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class MigDestroy:
    host_id: str
    device_uuid: str
    profile: str
    start: int
    size: int
    mig_uuid: str | None


@dataclass(slots=True)
class HostPlan:
    host: Host
    allocations: list[Allocation]
    free_after: int
    capacity: int
    mig_loss: int
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    request: PlacementRequest
    tenant: str
    policy: str
    nodes: list[HostPlan]
    dry_run: bool
    host_versions: dict[str, int]
    domain: str | None = None  # the placement group / AZ / region shared by a gang
    funnel: Funnel | None = None  # only when asked to explain a successful decision

    @property
    def host_ids(self) -> list[str]:
        return [n.host.id for n in self.nodes]

    @property
    def allocations(self) -> list[Allocation]:
        return [a for n in self.nodes for a in n.allocations]

    @property
    def actions(self) -> list[MigCreate]:
        out: list[MigCreate] = []
        for a in self.allocations:
            if a.create and a.profile and a.placement:
                geom = mig.geometry(a.model)
                p = geom.profile(a.profile) if geom else None
                out.append(MigCreate(a.host_id, a.device_uuid, a.profile, p.profile_id if p else -1, *a.placement))
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "domain": self.domain,
            "nodes": [
                {
                    "host": n.host.id,
                    "backend": n.host.backend_id,
                    "scores": n.scores,
                    "allocations": [_alloc_dict(a) for a in n.allocations],
                }
                for n in self.nodes
            ],
            "actions": [_action_dict(a) for a in self.actions],
        }


@dataclass(slots=True)
class Refusal:
    """Nothing fits. ``status``/``slug``/``detail``/``extensions()`` map onto a problem+json document."""

    request: PlacementRequest
    tenant: str
    detail: str
    funnel: Funnel
    quota: str | None = None  # the quota that blocked it (HTTP 403) rather than capacity (409)
    # What the nearest fit's GPUs would give if its host filters allowed it (empty: not computed / partial fit).
    nearest_allocations: list[Allocation] = field(default_factory=list)

    @property
    def status(self) -> int:
        return 403 if self.quota else 409

    @property
    def slug(self) -> str:
        return "quota-exceeded" if self.quota else "no-capacity"

    def extensions(self, *, hosts: bool = True) -> dict[str, Any]:
        """The problem's members. ``hosts=False`` (what tenants are shown): counts and reasons only, no host names
        and no GPU indexes (which GPUs of some host are busy); admins get the examples and the nearest host."""
        f = self.funnel
        filters: list[dict[str, Any]] = []
        for c in f.filters:
            if not (c.removed_hosts or c.removed_devices):
                continue
            entry: dict[str, Any] = {
                "filter": c.name,
                "removed_hosts": c.removed_hosts,
                "removed_devices": c.removed_devices,
            }
            if hosts:
                entry["examples"] = c.examples
            else:
                entry["reasons"] = list(dict.fromkeys(_without_gpu(r) for r in c.reasons))
            filters.append(entry)
        out: dict[str, Any] = {
            "request": self.request.describe(),
            "candidates": {"hosts": f.hosts, "devices": f.devices},
            "filters": filters,
            "nearest_fit": None,
        }
        if self.quota:
            out["quota"] = self.quota
        if f.nearest_fit is not None:
            nf = f.nearest_fit
            out["nearest_fit"] = {"satisfied": nf.satisfied, "available": nf.have}
            if hosts:
                out["nearest_fit"] = {"host": nf.host_id, **out["nearest_fit"], "missing": nf.missing}
                if self.nearest_allocations:  # names devices and MIG UUIDs: admins only
                    out["nearest_fit"]["would_take"] = [_alloc_dict(a) for a in self.nearest_allocations]
            else:
                out["nearest_fit"]["missing"] = [_without_gpu(m) for m in nf.missing]
        return out

    def to_problem(self) -> dict[str, Any]:
        return {
            "type": f"https://gpufabric.dev/problems/{self.slug}",
            "title": "Over quota" if self.quota else "No capacity for this request",
            "status": self.status,
            "detail": self.detail,
            **self.extensions(),
        }


@dataclass(slots=True)
class Claim:
    id: str
    tenant: str
    allocations: list[Allocation]
    actions: list[MigCreate]

    @property
    def host_ids(self) -> list[str]:
        return sorted({a.host_id for a in self.allocations})


_GPU_INDEX = re.compile(r"GPU \d+: ")


def _without_gpu(reason: str) -> str:
    """A reason without the GPU index it was about (``GPU 3: no free gpu capacity`` -> ``no free gpu capacity``)."""
    return _GPU_INDEX.sub("", reason)


def _alloc_dict(a: Allocation) -> dict[str, Any]:
    d: dict[str, Any] = {"device": a.device_uuid, "kind": a.kind, "model": a.model, "units": a.units}
    if a.profile:
        d["profile"] = a.profile
    if a.placement:
        d["placement"] = {"start": a.placement[0], "size": a.placement[1]}
    if a.mig_uuid:
        d["mig_uuid"] = a.mig_uuid
    if a.create:
        d["create"] = True
    if a.vgpu_type:
        d["vgpu_type"] = a.vgpu_type
    return d


def _action_dict(a: MigCreate) -> dict[str, Any]:
    return {
        "action": "create-mig-instance",
        "host": a.host_id,
        "device": a.device_uuid,
        "profile": a.profile,
        "profile_id": a.profile_id,
        "placement": {"start": a.start, "size": a.size},
    }
