"""EC2 placement groups, capacity reservations and capacity blocks behind one interface.

moto answers these EC2 calls with HTTP 500, so tests use :class:`FakeCapacity`, an in-memory
implementation of the same :class:`CapacityProvider` protocol. Its fidelity (what it checks and what it
does not) is listed on the class and in docs/eks.md.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from drivers.eks.aws import AwsTarget, call
from drivers.eks.errors import CapacityError

PlacementStrategy = Literal["cluster", "partition", "spread"]
ReservationType = Literal["default", "capacity-block"]
ReservationState = Literal["active", "pending", "expired", "cancelled", "scheduled", "payment-pending", "unsupported"]


class PlacementGroup(BaseModel):
    name: str
    group_id: str
    strategy: PlacementStrategy
    state: str = "available"
    partition_count: int | None = None
    spread_level: Literal["host", "rack"] | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class CapacityReservation(BaseModel):
    reservation_id: str
    instance_type: str
    availability_zone: str
    total_count: int = Field(ge=0)
    available_count: int = Field(ge=0)
    state: ReservationState = "active"
    reservation_type: ReservationType = "default"
    start: datetime | None = None
    end: datetime | None = None
    placement_group_arn: str | None = None
    instance_match_criteria: Literal["open", "targeted"] = "open"

    def usable_at(self, at: datetime) -> bool:
        if self.state != "active":
            return False
        if self.start is not None and at < self.start:
            return False
        return not (self.end is not None and at >= self.end)


class CapacityBlockOffering(BaseModel):
    offering_id: str
    instance_type: str
    availability_zone: str
    instance_count: int
    start: datetime
    end: datetime
    duration_hours: int
    upfront_fee: str | None = None
    currency: str | None = None


class ReservationMatch(BaseModel):
    """Answer to "can this reservation hold N nodes of type T in zone Z now?"."""

    reservation: CapacityReservation | None
    reason: str | None = None


@runtime_checkable
class CapacityProvider(Protocol):
    def create_placement_group(
        self, name: str, strategy: PlacementStrategy, partition_count: int | None = None
    ) -> PlacementGroup: ...

    def describe_placement_groups(self, names: list[str] | None = None) -> list[PlacementGroup]: ...

    def delete_placement_group(self, name: str) -> None: ...

    def describe_capacity_reservations(
        self, ids: list[str] | None = None, instance_type: str | None = None, availability_zone: str | None = None
    ) -> list[CapacityReservation]: ...

    def describe_capacity_block_offerings(
        self,
        instance_type: str,
        instance_count: int,
        duration_hours: int,
        start_after: datetime | None = None,
        end_before: datetime | None = None,
    ) -> list[CapacityBlockOffering]: ...

    def purchase_capacity_block(self, offering_id: str) -> CapacityReservation: ...


def find_reservation(
    provider: CapacityProvider,
    instance_type: str,
    count: int,
    availability_zone: str | None = None,
    at: datetime | None = None,
    reservation_id: str | None = None,
) -> ReservationMatch:
    """The first reservation usable at ``at`` with ``count`` free instances, or a reason why none is."""
    at = at or datetime.now(UTC)
    candidates = provider.describe_capacity_reservations(
        ids=[reservation_id] if reservation_id else None,
        instance_type=instance_type,
        availability_zone=availability_zone,
    )
    if not candidates:
        where = f" in {availability_zone}" if availability_zone else ""
        return ReservationMatch(reservation=None, reason=f"no capacity reservation for {instance_type}{where}")
    reasons: list[str] = []
    for reservation in candidates:
        if not reservation.usable_at(at):
            window = (
                f"{reservation.start:%Y-%m-%d %H:%M} - {reservation.end:%Y-%m-%d %H:%M} UTC" if reservation.end else ""
            )
            reasons.append(f"{reservation.reservation_id} is {reservation.state} {window}".strip())
        elif reservation.available_count < count:
            reasons.append(
                f"{reservation.reservation_id} has {reservation.available_count} of "
                f"{reservation.total_count} instances free, {count} needed"
            )
        else:
            return ReservationMatch(reservation=reservation)
    return ReservationMatch(reservation=None, reason="; ".join(reasons))


# -- the real one ------------------------------------------------------------------------------


class Boto3Capacity:
    """:class:`CapacityProvider` over the EC2 API."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    @classmethod
    def connect(cls, target: AwsTarget) -> Boto3Capacity:
        return cls(target.client("ec2"))

    def _raise_as_capacity_error(self, operation: str, fn: Callable[[], Any]) -> Any:
        from drivers.eks.errors import AwsCallFailed

        try:
            return call(operation, fn)
        except AwsCallFailed as exc:
            raise CapacityError(exc.code, exc.message) from None

    def create_placement_group(
        self, name: str, strategy: PlacementStrategy, partition_count: int | None = None
    ) -> PlacementGroup:
        params: dict[str, Any] = {"GroupName": name, "Strategy": strategy}
        if partition_count is not None:
            params["PartitionCount"] = partition_count
        raw = self._raise_as_capacity_error(
            "ec2:CreatePlacementGroup", lambda: self.ec2.create_placement_group(**params)
        ).get("PlacementGroup")
        if raw:
            return _placement_group_from_ec2(raw)
        return self.describe_placement_groups([name])[0]

    def describe_placement_groups(self, names: list[str] | None = None) -> list[PlacementGroup]:
        params: dict[str, Any] = {"GroupNames": names} if names else {}
        raw = self._raise_as_capacity_error(
            "ec2:DescribePlacementGroups", lambda: self.ec2.describe_placement_groups(**params)
        )
        return [_placement_group_from_ec2(g) for g in raw.get("PlacementGroups", [])]

    def delete_placement_group(self, name: str) -> None:
        self._raise_as_capacity_error(
            "ec2:DeletePlacementGroup", lambda: self.ec2.delete_placement_group(GroupName=name)
        )

    def describe_capacity_reservations(
        self, ids: list[str] | None = None, instance_type: str | None = None, availability_zone: str | None = None
    ) -> list[CapacityReservation]:
        filters = []
        if instance_type:
            filters.append({"Name": "instance-type", "Values": [instance_type]})
        if availability_zone:
            filters.append({"Name": "availability-zone", "Values": [availability_zone]})
        params: dict[str, Any] = {}
        if ids:
            params["CapacityReservationIds"] = ids
        if filters:
            params["Filters"] = filters

        def pages() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in self.ec2.get_paginator("describe_capacity_reservations").paginate(**params):
                out.extend(page.get("CapacityReservations", []))
            return out

        return [
            _reservation_from_ec2(r) for r in self._raise_as_capacity_error("ec2:DescribeCapacityReservations", pages)
        ]

    def describe_capacity_block_offerings(
        self,
        instance_type: str,
        instance_count: int,
        duration_hours: int,
        start_after: datetime | None = None,
        end_before: datetime | None = None,
    ) -> list[CapacityBlockOffering]:
        params: dict[str, Any] = {
            "InstanceType": instance_type,
            "InstanceCount": instance_count,
            "CapacityDurationHours": duration_hours,
        }
        if start_after:
            params["StartDateRange"] = start_after
        if end_before:
            params["EndDateRange"] = end_before
        raw = self._raise_as_capacity_error(
            "ec2:DescribeCapacityBlockOfferings", lambda: self.ec2.describe_capacity_block_offerings(**params)
        )
        return [
            CapacityBlockOffering(
                offering_id=o["CapacityBlockOfferingId"],
                instance_type=o["InstanceType"],
                availability_zone=o["AvailabilityZone"],
                instance_count=o["InstanceCount"],
                start=o["StartDate"],
                end=o["EndDate"],
                duration_hours=o["CapacityBlockDurationHours"],
                upfront_fee=o.get("UpfrontFee"),
                currency=o.get("CurrencyCode"),
            )
            for o in raw.get("CapacityBlockOfferings", [])
        ]

    def purchase_capacity_block(self, offering_id: str) -> CapacityReservation:
        raw = self._raise_as_capacity_error(
            "ec2:PurchaseCapacityBlock",
            lambda: self.ec2.purchase_capacity_block(
                CapacityBlockOfferingId=offering_id, InstancePlatform="Linux/UNIX"
            ),
        )
        return _reservation_from_ec2(raw["CapacityReservation"])


def _placement_group_from_ec2(raw: dict[str, Any]) -> PlacementGroup:
    return PlacementGroup(
        name=raw["GroupName"],
        group_id=raw.get("GroupId", ""),
        strategy=raw["Strategy"],
        state=raw.get("State", "available"),
        partition_count=raw.get("PartitionCount"),
        spread_level=raw.get("SpreadLevel"),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
    )


def _reservation_from_ec2(raw: dict[str, Any]) -> CapacityReservation:
    return CapacityReservation(
        reservation_id=raw["CapacityReservationId"],
        instance_type=raw["InstanceType"],
        availability_zone=raw["AvailabilityZone"],
        total_count=raw.get("TotalInstanceCount", 0),
        available_count=raw.get("AvailableInstanceCount", 0),
        state=raw.get("State", "active"),
        reservation_type=raw.get("ReservationType", "default"),
        start=raw.get("StartDate"),
        end=raw.get("EndDate"),
        placement_group_arn=raw.get("PlacementGroupArn"),
        instance_match_criteria=raw.get("InstanceMatchCriteria", "open"),
    )


# -- the fake ----------------------------------------------------------------------------------


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
