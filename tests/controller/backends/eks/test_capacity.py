"""The in-repo capacity fake (moto has no placement groups or capacity reservations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drivers.eks import CapacityError, CapacityProvider, FakeCapacity, find_reservation

T0 = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def fake(clock: list[datetime]) -> FakeCapacity:
    return FakeCapacity(clock=lambda: clock[0])


def test_it_is_a_capacity_provider(fake: FakeCapacity) -> None:
    assert isinstance(fake, CapacityProvider)


def test_placement_groups(fake: FakeCapacity) -> None:
    cluster = fake.create_placement_group("l4-train", "cluster")
    partition = fake.create_placement_group("ckpt", "partition", partition_count=3)
    spread = fake.create_placement_group("infer", "spread")
    assert (cluster.strategy, cluster.partition_count) == ("cluster", None)
    assert partition.partition_count == 3 and spread.spread_level == "rack"
    assert {g.name for g in fake.describe_placement_groups()} == {"l4-train", "ckpt", "infer"}
    assert fake.describe_placement_groups(["ckpt"]) == [partition]

    with pytest.raises(CapacityError) as duplicate:
        fake.create_placement_group("l4-train", "cluster")
    assert duplicate.value.code == "InvalidPlacementGroup.Duplicate"
    with pytest.raises(CapacityError) as bad_count:
        fake.create_placement_group("x", "partition", partition_count=8)
    assert bad_count.value.code == "InvalidParameterValue"
    with pytest.raises(CapacityError) as wrong_strategy:
        fake.create_placement_group("x", "cluster", partition_count=2)
    assert wrong_strategy.value.code == "InvalidParameterCombination"

    fake.delete_placement_group("infer")
    with pytest.raises(CapacityError) as unknown:
        fake.describe_placement_groups(["infer"])
    assert unknown.value.code == "InvalidPlacementGroup.Unknown"


def test_reservations_and_matching(fake: FakeCapacity) -> None:
    fake.create_placement_group("l4-train", "cluster")
    reservation = fake.add_reservation("g6.12xlarge", "us-east-1a", count=4, placement_group="l4-train")
    assert reservation.available_count == 4 and reservation.placement_group_arn is not None

    match = find_reservation(fake, "g6.12xlarge", 3, availability_zone="us-east-1a", at=T0)
    assert match.reservation is not None and match.reservation.reservation_id == reservation.reservation_id

    fake.consume(reservation.reservation_id, 2)
    short = find_reservation(fake, "g6.12xlarge", 3, at=T0)
    assert short.reservation is None and "has 2 of 4 instances free, 3 needed" in (short.reason or "")
    none = find_reservation(fake, "p5.48xlarge", 1, availability_zone="us-east-1b", at=T0)
    assert none.reason == "no capacity reservation for p5.48xlarge in us-east-1b"

    with pytest.raises(CapacityError) as over:
        fake.consume(reservation.reservation_id, 3)
    assert over.value.code == "InsufficientInstanceCapacity"
    with pytest.raises(CapacityError) as unknown:
        fake.describe_capacity_reservations(ids=["cr-missing"])
    assert unknown.value.code == "InvalidCapacityReservationId.NotFound"
    fake.create_placement_group("spread", "spread")
    with pytest.raises(CapacityError):
        fake.add_reservation("g6.12xlarge", "us-east-1a", 1, placement_group="spread")


def test_capacity_block_lifecycle(fake: FakeCapacity, clock: list[datetime]) -> None:
    start = T0 + timedelta(hours=12, minutes=30)
    offering = fake.add_capacity_block_offering("p5.48xlarge", "us-east-1b", 2, start, duration_hours=48)
    found = fake.describe_capacity_block_offerings("p5.48xlarge", 2, 48)
    assert found == [offering] and offering.end == start + timedelta(hours=48)
    assert fake.describe_capacity_block_offerings("p5.48xlarge", 4, 48) == []

    block = fake.purchase_capacity_block(offering.offering_id)
    assert block.reservation_type == "capacity-block" and block.state == "scheduled"
    assert block.instance_match_criteria == "targeted"
    with pytest.raises(CapacityError):
        fake.purchase_capacity_block(offering.offering_id)

    early = find_reservation(fake, "p5.48xlarge", 2, at=T0, reservation_id=block.reservation_id)
    assert early.reservation is None and "scheduled" in (early.reason or "")
    clock[0] = start + timedelta(hours=1)
    (active,) = fake.describe_capacity_reservations(ids=[block.reservation_id])
    assert active.state == "active"
    assert find_reservation(fake, "p5.48xlarge", 2, at=clock[0]).reservation is not None
    clock[0] = start + timedelta(hours=48)
    assert fake.describe_capacity_reservations(ids=[block.reservation_id])[0].state == "expired"


@pytest.mark.parametrize("hours", [0, 12, 30, 15 * 24, 183 * 24])
def test_capacity_block_durations_are_checked(fake: FakeCapacity, hours: int) -> None:
    with pytest.raises(CapacityError):
        fake.describe_capacity_block_offerings("p5.48xlarge", 1, hours)


@pytest.mark.parametrize("hours", [24, 14 * 24, 21 * 24, 182 * 24])
def test_capacity_block_durations_accepted(fake: FakeCapacity, hours: int) -> None:
    assert fake.describe_capacity_block_offerings("p5.48xlarge", 1, hours) == []


def test_reservation_groups_sum_their_active_reservations_of_the_nodegroup_type_and_zone(
    fake: FakeCapacity, clock: list[datetime]
) -> None:
    """Only the group's active reservations of the nodegroup's instance types and AZs hold its new nodes."""
    from controller.backends.eks.capacity import group_refusal, group_state
    from drivers.eks import EksNodegroupConfig

    a = fake.add_reservation("p5.48xlarge", "us-east-1a", 4, available=1)
    b = fake.add_reservation("p5.48xlarge", "us-east-1a", 2)
    other_zone = fake.add_reservation("p5.48xlarge", "us-east-1b", 8)
    other_type = fake.add_reservation("g6.12xlarge", "us-east-1a", 8)
    ended = fake.add_reservation("p5.48xlarge", "us-east-1a", 2, reservation_type="capacity-block", start=T0, end=T0)
    arn = "arn:aws:resource-groups:us-east-1:123456789012:group/p5-pool"
    ids = [r.reservation_id for r in (a, b, other_zone, other_type, ended)]
    fake.group_resources(arn, ids)
    assert fake.group_reservation_ids("p5-pool") == sorted(ids)  # by name or ARN
    with pytest.raises(CapacityError) as missing:
        fake.group_reservation_ids("nope")
    assert missing.value.code == "NotFoundException"

    ng = EksNodegroupConfig(
        name="p5-pool", managed=True, instance_types=["p5.48xlarge"], min=0, max=9, desired=2, efa=True,
        gpus_per_node=8, gpu_model="H100", availability_zones=["us-east-1a"], capacity_type="ON_DEMAND",
        capacity_reservation_resource_group=arn,
    )  # fmt: skip
    state = group_state(fake, ng, desired=3, registered=2, now=T0 + timedelta(hours=1))
    assert state is not None
    assert (state.total, state.available, state.launching, state.free) == (6, 3, 1, 2)
    assert group_refusal(state, ng, 2) is None
    assert group_refusal(state, ng, 3) == (
        f"nodegroup p5-pool: capacity reservation group {arn} has 2 of 6 p5.48xlarge in us-east-1a instances free "
        "in 2 reservation(s), 1 launching for the nodegroup; 3 requested"
    )
    rows = {
        (r["instance_type"], r["availability_zone"]): r["available"] for r in state.as_dict()["by_instance_type_az"]
    }
    assert rows == {
        ("p5.48xlarge", "us-east-1a"): 3,
        ("p5.48xlarge", "us-east-1b"): 8,
        ("g6.12xlarge", "us-east-1a"): 8,
    }

    g6 = ng.model_copy(update={"instance_types": ["g5.48xlarge"]})
    none = group_state(fake, g6, desired=None, registered=0, now=T0)
    assert group_refusal(none, g6, 1) == (
        f"nodegroup p5-pool: capacity reservation group {arn} has no active reservation for g5.48xlarge in us-east-1a"
    )
    assert group_state(fake, ng.model_copy(update={"capacity_reservation_resource_group": None}), 1, 1, T0) is None
