"""What an EKS nodegroup's nodes run on, in the lease flow: on-demand, an On-Demand Capacity Reservation, an EC2
Capacity Block for ML, or Spot; and the cluster placement group of an EFA nodegroup.

- **Reservations of a resource group, new nodes**: an ODCR targeted through a capacity reservation resource group
  counts the group's reservations (AWS Resource Groups ``ListGroupResources``) of the nodegroup's instance types
  and AZs that are active, summed, against the same launching nodes.
- **Reservation / Capacity Block, new nodes**: before a lease scales a nodegroup up, the reservation must hold the
  new nodes: free = ``AvailableInstanceCount`` minus the nodes the nodegroup was already asked for that have not
  registered yet (they will launch into the reservation; EC2 counts them only once they run). Not enough is the
  nodegroup's ``at_max`` answer (fail with the figures, or wait).
- **Capacity Block, any node**: its instances stop at the block's end, so a lease on one must end before it: a
  lease without a duration, or one that would run past the end, is given back to placement with the reason
  (``TryElsewhere``): it is placed on other capacity, or fails with that reason when there is none.
- **Placement group**: an EFA nodegroup's cluster placement group is reused when it exists and created when it
  does not, before the nodegroup is scaled up; a group of another strategy is refused (EFA needs ``cluster``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.eks import EksNodegroupConfig
from drivers.eks.capacity import Boto3Capacity, CapacityProvider, CapacityReservation, PlacementGroup
from drivers.eks.errors import CapacityError, EksError

USABLE_UNTIL_LABEL = "gpufabric.dev/usable-until"  # read by placement (controller.leases.fleet): a lease ends before


@dataclass(frozen=True)
class ReservationState:
    """A nodegroup's reservation as the lease flow sees it."""

    reservation: CapacityReservation
    launching: int  # nodes the nodegroup was asked for that have not registered (not yet counted by EC2)

    @property
    def free(self) -> int:
        return max(0, self.reservation.available_count - self.launching)

    def as_dict(self) -> dict[str, Any]:
        r = self.reservation
        return {
            "id": r.reservation_id,
            "kind": "capacity-block" if r.reservation_type == "capacity-block" else "odcr",
            "state": r.state,
            "instance_type": r.instance_type,
            "availability_zone": r.availability_zone,
            "total": r.total_count,
            "used": r.total_count - r.available_count,
            "available": r.available_count,
            "launching": self.launching,
            "free": self.free,
            "start": r.start.isoformat() if r.start else None,
            "end": r.end.isoformat() if r.end else None,
            "match": r.instance_match_criteria,
        }


@dataclass(frozen=True)
class GroupReservationState:
    """A nodegroup's ODCRs targeted through a capacity reservation resource group: the group's reservations, of
    which those of the nodegroup's instance types (and AZs, when it names some) that are active now count."""

    group: str
    reservations: tuple[CapacityReservation, ...]
    instance_types: tuple[str, ...]
    zones: tuple[str, ...]
    launching: int
    now: datetime

    @property
    def matching(self) -> list[CapacityReservation]:
        return [
            r
            for r in self.reservations
            if r.instance_type in self.instance_types
            and (not self.zones or r.availability_zone in self.zones)
            and r.usable_at(self.now)
        ]

    @property
    def total(self) -> int:
        return sum(r.total_count for r in self.matching)

    @property
    def available(self) -> int:
        return sum(r.available_count for r in self.matching)

    @property
    def free(self) -> int:
        return max(0, self.available - self.launching)

    def as_dict(self) -> dict[str, Any]:
        by: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.reservations:
            if not r.usable_at(self.now):
                continue
            row = by.setdefault(
                (r.instance_type, r.availability_zone),
                {"instance_type": r.instance_type, "availability_zone": r.availability_zone, "reservations": 0}
                | {"total": 0, "used": 0, "available": 0},
            )
            row["reservations"] += 1
            row["total"] += r.total_count
            row["used"] += r.total_count - r.available_count
            row["available"] += r.available_count
        return {
            "resource_group": self.group,
            "kind": "odcr-group",
            "reservation_ids": [r.reservation_id for r in self.reservations],
            "instance_types": list(self.instance_types),
            "total": self.total,
            "used": self.total - self.available,
            "available": self.available,
            "launching": self.launching,
            "free": self.free,
            "by_instance_type_az": [by[k] for k in sorted(by)],
        }


def group_state(
    provider: CapacityProvider, ng: EksNodegroupConfig, desired: int | None, registered: int, now: datetime
) -> GroupReservationState | None:
    """The nodegroup's capacity reservation resource group, its reservations summed (None without a group)."""
    group = ng.capacity_reservation_resource_group
    if not group:
        return None
    ids = provider.group_reservation_ids(group)
    reservations = provider.describe_capacity_reservations(ids=ids) if ids else []
    launching = max(0, (desired if desired is not None else registered) - registered)
    return GroupReservationState(
        group,
        tuple(sorted(reservations, key=lambda r: r.reservation_id)),
        tuple(ng.instance_types),
        tuple(ng.availability_zones),
        launching,
        now,
    )


def group_refusal(state: GroupReservationState | None, ng: EksNodegroupConfig, add: int) -> str | None:
    """Why the group's reservations cannot take ``add`` more nodes of the nodegroup now (None: they can)."""
    if state is None or state.free >= add:
        return None
    where = "/".join(state.instance_types) + (f" in {', '.join(state.zones)}" if state.zones else "")
    matching = state.matching
    if not matching:
        return f"nodegroup {ng.name}: capacity reservation group {state.group} has no active reservation for {where}"
    launching = f", {state.launching} launching for the nodegroup" if state.launching else ""
    return (
        f"nodegroup {ng.name}: capacity reservation group {state.group} has {state.free} of {state.total} "
        f"{where} instances free in {len(matching)} reservation(s){launching}; {add} requested"
    )


def provider_for(config: Any) -> CapacityProvider:
    return Boto3Capacity.connect(config.aws)


def reservation_state(
    provider: CapacityProvider, ng: EksNodegroupConfig, desired: int | None, registered: int
) -> ReservationState | None:
    """The nodegroup's reservation (by id) with the nodes still launching into it; None without one."""
    if not ng.capacity_reservation_id:
        return None
    (reservation,) = provider.describe_capacity_reservations(ids=[ng.capacity_reservation_id]) or (None,)
    if reservation is None:
        raise CapacityError(
            "InvalidCapacityReservationId.NotFound", f"capacity reservation {ng.capacity_reservation_id} not found"
        )
    launching = max(0, (desired if desired is not None else registered) - registered)
    return ReservationState(reservation, launching)


def scale_up_refusal(state: ReservationState | None, ng: EksNodegroupConfig, add: int, now: datetime) -> str | None:
    """Why the nodegroup's reservation cannot take ``add`` more nodes now (None: it can, or there is none)."""
    if state is None:
        return None
    r = state.reservation
    what = "capacity block" if r.reservation_type == "capacity-block" else "capacity reservation"
    if not r.usable_at(now):
        window = f" ({_window(r)})" if r.end or r.start else ""
        return f"nodegroup {ng.name}: {what} {r.reservation_id} is {r.state}{window}"
    if state.free < add:
        launching = f", {state.launching} launching for the nodegroup" if state.launching else ""
        return (
            f"nodegroup {ng.name}: {what} {r.reservation_id} has {state.free} of {r.total_count} instances free"
            f"{launching}; {add} requested"
        )
    return None


def block_end_refusal(
    state: ReservationState | None, ng: EksNodegroupConfig, duration: timedelta | None, now: datetime
) -> str | None:
    """Why a lease of ``duration`` cannot run on the nodegroup's Capacity Block (None: it fits before the end)."""
    if state is None or state.reservation.reservation_type != "capacity-block" or state.reservation.end is None:
        return None
    end = state.reservation.end
    block = f"nodegroup {ng.name} runs on capacity block {state.reservation.reservation_id}, which ends {end:%Y-%m-%d %H:%M} UTC"
    if duration is None:
        return f"{block}: a lease on it needs a duration that ends before then"
    if now + duration > end:
        return (
            f"{block}: a lease of {_human(duration)} would end {now + duration:%Y-%m-%d %H:%M} UTC "
            f"(at most {_human(max(end - now, timedelta(0)))} left)"
        )
    return None


def ensure_placement_group(provider: CapacityProvider, name: str) -> tuple[PlacementGroup, bool]:
    """An EFA nodegroup's cluster placement group: reused when it exists, created when not (``True``)."""
    try:
        (group,) = provider.describe_placement_groups([name])
    except CapacityError as exc:
        if exc.code != "InvalidPlacementGroup.Unknown":
            raise
        return provider.create_placement_group(name, "cluster"), True
    if group.strategy != "cluster":
        raise CapacityError(
            "InvalidPlacementGroup.Strategy",
            f"placement group {name} is a {group.strategy} group; EFA nodegroups need a cluster placement group",
        )
    return group, False


def capacity_report(
    provider: CapacityProvider | None, ng: EksNodegroupConfig, desired: int | None, registered: int
) -> dict[str, Any]:
    """The ``capacity`` entry of a nodegroup in ``GET /v1/backends/{name}/checks``."""
    out: dict[str, Any] = {"type": ng.capacity_kind, "reservation": None, "placement_group": None}
    if ng.capacity_reservation_resource_group:
        out["reservation_resource_group"] = ng.capacity_reservation_resource_group
    problems: list[str] = []
    if provider is not None:
        try:
            state = reservation_state(provider, ng, desired, registered)
            if state is not None:
                out["reservation"] = state.as_dict()
        except EksError as exc:
            problems.append(f"reservation: {exc}")
        try:
            pooled = group_state(provider, ng, desired, registered, now_utc())
            if pooled is not None:
                out["reservation_group"] = pooled.as_dict()
        except EksError as exc:
            problems.append(f"reservation group: {exc}")
        if ng.placement_group:
            try:
                (group,) = provider.describe_placement_groups([ng.placement_group])
                out["placement_group"] = {"name": group.name, "strategy": group.strategy, "state": group.state}
            except EksError as exc:
                out["placement_group"] = {"name": ng.placement_group, "strategy": None, "state": "missing"}
                problems.append(f"placement group: {exc}")
    if problems:
        out["errors"] = problems
    return out


def _window(r: CapacityReservation) -> str:
    start = f"{r.start:%Y-%m-%d %H:%M}" if r.start else "…"
    end = f"{r.end:%Y-%m-%d %H:%M}" if r.end else "…"
    return f"{start} - {end} UTC"


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def capacity_block_ends(config: Any, report: Any) -> dict[str, str]:
    """The end of each Capacity Block nodegroup's block (ISO 8601), written on its hosts as
    ``gpufabric.dev/usable-until`` so placement refuses leases that would outlast it. A block AWS does not
    describe now is named in ``report.unknown_blocks`` and ``report.errors``."""
    blocks = [ng for ng in config.gpu_nodegroups if ng.capacity_type == "CAPACITY_BLOCK" and ng.capacity_reservation_id]
    if not blocks:
        return {}
    out: dict[str, str] = {}
    try:
        provider = provider_for(config)
    except Exception as exc:  # no credentials / endpoint
        report.errors.append(f"capacity blocks: {exc}")
        report.unknown_blocks.update(ng.name for ng in blocks)
        return out
    for ng in blocks:
        try:
            state = reservation_state(provider, ng, None, 0)
        except EksError as exc:
            report.errors.append(f"capacity block of nodegroup {ng.name}: {exc}")
            report.unknown_blocks.add(ng.name)
            continue
        if state is not None and state.reservation.end is not None:
            out[ng.name] = state.reservation.end.astimezone(UTC).isoformat()
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)
