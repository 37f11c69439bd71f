"""EC2 placement groups, capacity reservations and capacity blocks behind one interface.

moto answers these EC2 calls with HTTP 500, so tests use :class:`FakeCapacity`, an in-memory
implementation of the same :class:`CapacityProvider` protocol. Its fidelity (what it checks and what it
does not) is listed on the class and in docs/eks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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

    def group_reservation_ids(self, group: str) -> list[str]: ...


RESERVATION_RESOURCE_TYPE = "AWS::EC2::CapacityReservation"


def reservation_id_from_arn(arn: str) -> str | None:
    """``arn:aws:ec2:<region>:<account>:capacity-reservation/cr-…`` -> ``cr-…`` (None for another resource)."""
    kind, _, rid = arn.rpartition(":")[2].partition("/")
    return rid if kind == "capacity-reservation" and rid else None


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

    def __init__(self, ec2: Any, resource_groups: Any | None = None) -> None:
        self.ec2 = ec2
        self.resource_groups = resource_groups

    @classmethod
    def connect(cls, target: AwsTarget) -> Boto3Capacity:
        return cls(target.client("ec2"), target.client("resource-groups"))

    def group_reservation_ids(self, group: str) -> list[str]:
        """The capacity reservations of a capacity reservation resource group (name or ARN), by AWS Resource
        Groups ``ListGroupResources`` (all pages; only ``AWS::EC2::CapacityReservation`` members)."""
        if self.resource_groups is None:
            raise CapacityError("NoResourceGroupsClient", "no AWS Resource Groups client to list the group's members")
        client = self.resource_groups

        def pages() -> list[str]:
            arns: list[str] = []
            paginator = client.get_paginator("list_group_resources")
            filters = [{"Name": "resource-type", "Values": [RESERVATION_RESOURCE_TYPE]}]
            for page in paginator.paginate(Group=group, Filters=filters):
                arns += [r["Identifier"]["ResourceArn"] for r in page.get("Resources", [])]
            return arns

        arns = self._raise_as_capacity_error("resource-groups:ListGroupResources", pages)
        return sorted({rid for arn in arns if (rid := reservation_id_from_arn(arn))})

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
