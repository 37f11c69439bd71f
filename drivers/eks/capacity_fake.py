"""An in-memory :class:`drivers.eks.capacity.CapacityProvider` for tests and dry runs, checking what EC2 checks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from drivers.eks.capacity import (
    CapacityBlockOffering,
    CapacityReservation,
    PlacementGroup,
    PlacementStrategy,
    ReservationType,
)
from drivers.eks.errors import CapacityError


class FakeCapacity:
    """In-memory :class:`CapacityProvider` for tests and dry runs.

    Checks like EC2: strategy names; ``partition_count`` only for ``partition`` and 1..7; duplicate
    names (``InvalidPlacementGroup.Duplicate``); unknown names and ids (``InvalidPlacementGroup.Unknown``,
    ``InvalidCapacityReservationId.NotFound``); offering ids used once; capacity-block durations (1-14 days in whole
    days, or up to 182 days in weeks) and instance counts 1..64; a reservation in a placement group needs a
    ``cluster`` group; capacity blocks are ``scheduled`` before their start, ``active`` in the window and
    ``expired`` after it, by the fake's clock.

    Does not model: instances (nothing is launched, so spread's 7-per-AZ limit, cluster-group
    capacity errors and ``InsufficientInstanceCapacity`` never happen unless a test calls
    :meth:`consume`), prices, tags on create, reservation expiry on its own (state follows the clock
    only through :meth:`CapacityReservation.usable_at`), or regions (one fake is one region).
    """

    def __init__(self, region: str = "us-east-1", clock: Callable[[], datetime] | None = None) -> None:
        self.region = region
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.placement_groups: dict[str, PlacementGroup] = {}
        self.reservations: dict[str, CapacityReservation] = {}
        self.offerings: dict[str, CapacityBlockOffering] = {}
        self.resource_groups: dict[str, list[str]] = {}  # group name -> reservation ids (Resource Groups members)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):017x}"

    # placement groups
    def create_placement_group(
        self, name: str, strategy: PlacementStrategy, partition_count: int | None = None
    ) -> PlacementGroup:
        if strategy not in ("cluster", "partition", "spread"):
            raise CapacityError("InvalidParameterValue", f"Value ({strategy}) for parameter strategy is invalid")
        if partition_count is not None:
            if strategy != "partition":
                raise CapacityError("InvalidParameterCombination", "PartitionCount is only valid with partition")
            if not 1 <= partition_count <= 7:
                raise CapacityError("InvalidParameterValue", "PartitionCount must be between 1 and 7")
        with self._lock:
            if name in self.placement_groups:
                raise CapacityError("InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists.")
            group = PlacementGroup(
                name=name,
                group_id=self._next_id("pg"),
                strategy=strategy,
                partition_count=(partition_count or 2) if strategy == "partition" else None,
                spread_level="rack" if strategy == "spread" else None,
            )
            self.placement_groups[name] = group
            return group

    def describe_placement_groups(self, names: list[str] | None = None) -> list[PlacementGroup]:
        with self._lock:
            if names:
                missing = [n for n in names if n not in self.placement_groups]
                if missing:
                    raise CapacityError(
                        "InvalidPlacementGroup.Unknown", f"The Placement Group '{missing[0]}' is unknown."
                    )
                return [self.placement_groups[n] for n in names]
            return list(self.placement_groups.values())

    def delete_placement_group(self, name: str) -> None:
        with self._lock:
            if self.placement_groups.pop(name, None) is None:
                raise CapacityError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")

    # reservations
    def add_reservation(
        self,
        instance_type: str,
        availability_zone: str,
        count: int,
        available: int | None = None,
        reservation_type: ReservationType = "default",
        start: datetime | None = None,
        end: datetime | None = None,
        placement_group: str | None = None,
        instance_match_criteria: Literal["open", "targeted"] = "open",
    ) -> CapacityReservation:
        """Seed a reservation (an admin made it in the console)."""
        arn = None
        if placement_group is not None:
            group = self.describe_placement_groups([placement_group])[0]
            if group.strategy != "cluster":
                raise CapacityError(
                    "InvalidParameterValue", "capacity reservations only go in cluster placement groups"
                )
            arn = f"arn:aws:ec2:{self.region}:123456789012:placement-group/{placement_group}"
        with self._lock:
            reservation = CapacityReservation(
                reservation_id=self._next_id("cr"),
                instance_type=instance_type,
                availability_zone=availability_zone,
                total_count=count,
                available_count=count if available is None else available,
                reservation_type=reservation_type,
                state="active" if reservation_type == "default" else "scheduled",
                start=start,
                end=end,
                placement_group_arn=arn,
                instance_match_criteria=instance_match_criteria,
            )
            self.reservations[reservation.reservation_id] = reservation
            return self._with_clock_state(reservation)

    def consume(self, reservation_id: str, count: int) -> CapacityReservation:
        """Launch ``count`` instances into a reservation (negative releases them)."""
        with self._lock:
            reservation = self._reservation(reservation_id)
            left = reservation.available_count - count
            if left < 0:
                raise CapacityError(
                    "InsufficientInstanceCapacity",
                    f"{reservation_id} has {reservation.available_count} instances free, {count} requested",
                )
            if left > reservation.total_count:
                raise CapacityError("InvalidParameterValue", "cannot release more instances than the reservation holds")
            reservation.available_count = left
            return self._with_clock_state(reservation)

    def group_resources(self, group: str, reservation_ids: list[str]) -> None:
        """Add reservations to a capacity reservation resource group (``GroupResources``); made on first use."""
        with self._lock:
            for rid in reservation_ids:
                self._reservation(rid)
            members = self.resource_groups.setdefault(_group_name(group), [])
            members += [r for r in reservation_ids if r not in members]

    def group_reservation_ids(self, group: str) -> list[str]:
        with self._lock:
            members = self.resource_groups.get(_group_name(group))
            if members is None:
                raise CapacityError("NotFoundException", f"Cannot find group {_group_name(group)}.")
            return sorted(members)

    def _reservation(self, reservation_id: str) -> CapacityReservation:
        try:
            return self.reservations[reservation_id]
        except KeyError:
            raise CapacityError(
                "InvalidCapacityReservationId.NotFound",
                f"The capacity reservation ID '{reservation_id}' does not exist",
            ) from None

    def _with_clock_state(self, reservation: CapacityReservation) -> CapacityReservation:
        """Capacity blocks are ``scheduled`` before their start, ``active`` in the window, ``expired`` after."""
        if reservation.reservation_type == "capacity-block" and reservation.state in ("scheduled", "active", "expired"):
            now = self._clock()
            if reservation.start and now < reservation.start:
                reservation.state = "scheduled"
            elif reservation.end and now >= reservation.end:
                reservation.state = "expired"
            else:
                reservation.state = "active"
        return reservation.model_copy()

    def describe_capacity_reservations(
        self, ids: list[str] | None = None, instance_type: str | None = None, availability_zone: str | None = None
    ) -> list[CapacityReservation]:
        with self._lock:
            selected = [self._reservation(i) for i in ids] if ids else list(self.reservations.values())
            return [
                self._with_clock_state(r)
                for r in selected
                if (instance_type is None or r.instance_type == instance_type)
                and (availability_zone is None or r.availability_zone == availability_zone)
            ]

    # capacity blocks
    def add_capacity_block_offering(
        self,
        instance_type: str,
        availability_zone: str,
        instance_count: int,
        start: datetime,
        duration_hours: int,
        upfront_fee: str = "0.00",
    ) -> CapacityBlockOffering:
        with self._lock:
            offering = CapacityBlockOffering(
                offering_id=self._next_id("cbr"),
                instance_type=instance_type,
                availability_zone=availability_zone,
                instance_count=instance_count,
                start=start,
                end=start + timedelta(hours=duration_hours),
                duration_hours=duration_hours,
                upfront_fee=upfront_fee,
                currency="USD",
            )
            self.offerings[offering.offering_id] = offering
            return offering

    def describe_capacity_block_offerings(
        self,
        instance_type: str,
        instance_count: int,
        duration_hours: int,
        start_after: datetime | None = None,
        end_before: datetime | None = None,
    ) -> list[CapacityBlockOffering]:
        if not 1 <= instance_count <= 64:
            raise CapacityError("InvalidParameterValue", "InstanceCount must be between 1 and 64")
        days, rest = divmod(duration_hours, 24)
        if rest or days < 1 or not (days <= 14 or (days <= 182 and days % 7 == 0)):
            raise CapacityError(
                "InvalidParameterValue",
                "CapacityDurationHours must be 1-14 days in whole days, or up to 182 days in multiples of 7 days",
            )
        with self._lock:
            return [
                o
                for o in self.offerings.values()
                if o.instance_type == instance_type
                and o.instance_count == instance_count
                and o.duration_hours == duration_hours
                and (start_after is None or o.start >= start_after)
                and (end_before is None or o.end <= end_before)
            ]

    def purchase_capacity_block(self, offering_id: str) -> CapacityReservation:
        with self._lock:
            offering = self.offerings.pop(offering_id, None)
        if offering is None:
            raise CapacityError("InvalidCapacityBlockOfferingId.NotFound", f"offering {offering_id} does not exist")
        return self.add_reservation(
            offering.instance_type,
            offering.availability_zone,
            offering.instance_count,
            reservation_type="capacity-block",
            start=offering.start,
            end=offering.end,
            instance_match_criteria="targeted",
        )


def _group_name(group: str) -> str:
    """A resource group's name from its name or ARN (``arn:aws:resource-groups:<region>:<account>:group/<name>``)."""
    return group.rpartition(":group/")[2] if group.startswith("arn:") else group
