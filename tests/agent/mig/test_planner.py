"""The MIG planner's rules, on observed states built by hand (no NVML)."""

from __future__ import annotations

import pytest

from agent.mig.config import parse_mig_config
from agent.mig.model import GiProfile, MigValidationError, ObservedCi, ObservedGpu
from agent.mig.planner import plan_mig
from agent.mig.search import as_layout, best_placements, first_fit_placements, table_geometry
from drivers.contract.inventory import Placement
from drivers.gpus.mig_score import layout_cost
from tests.support.mig_builders import A100_40GB, PROFILE, a100, instance


def config(**configs: str) -> str:
    """YAML for configs given as `name="devices | mig-enabled | profile:count,..."`."""
    lines = ["version: v1", "mig-configs:"]
    for name, spec in configs.items():
        lines.append(f"  {name.replace('_', '-')}:")
        for entry in spec.split(";"):
            devices, enabled, *rest = (part.strip() for part in entry.split("|"))
            lines.append(f"    - devices: {devices}")
            lines.append(f"      mig-enabled: {enabled}")
            if rest and rest[0]:
                pairs = ", ".join(f'"{p.split(":")[0]}": {p.split(":")[1]}' for p in rest[0].split(","))
                lines.append(f"      mig-devices: {{{pairs}}}")
    return "\n".join(lines) + "\n"


def plan(gpus: list[ObservedGpu], spec: str, *, force: bool = False):  # type: ignore[no-untyped-def]
    return plan_mig(parse_mig_config(config(target=spec)), "target", gpus, force=force)


def layout_of(gpu_plan) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(e.profile, e.placement.start) for e in gpu_plan.layout]


# --- keep what fits -------------------------------------------------------------------------


def test_satisfied_gpu_is_untouched_with_no_operations() -> None:
    gpu = a100(0, instance(2, "3g.20gb", 0), instance(3, "2g.10gb", 4), instance(13, "1g.5gb", 6))
    result = plan([gpu], "all | true | 3g.20gb:1,2g.10gb:1,1g.5gb:1").gpus[0]
    assert result.status == "untouched" and result.operations == []
    assert result.reason == "current instances already satisfy the config"
    assert {e.state for e in result.layout} == {"kept"}


def test_existing_instances_that_fit_are_kept_and_only_the_rest_created() -> None:
    gpu = a100(0, instance(1, "3g.20gb", 4))
    result = plan([gpu], "all | true | 3g.20gb:1,1g.5gb:4").gpus[0]
    assert result.status == "change"
    assert [op.op for op in result.operations] == ["create-gi", "create-ci"] * 4
    assert not any(op.op.startswith("destroy") for op in result.operations)
    assert layout_of(result) == [("1g.5gb", 0), ("1g.5gb", 1), ("1g.5gb", 2), ("1g.5gb", 3), ("3g.20gb", 4)]
    assert [e.state for e in result.layout][-1] == "kept"


def test_gi_without_compute_instance_is_kept_and_completed() -> None:
    gpu = a100(0, instance(1, "3g.20gb", 0, ci=False), instance(2, "3g.20gb", 4))
    result = plan([gpu], "all | true | 3g.20gb:2").gpus[0]
    assert [(op.op, op.gpu_instance_id) for op in result.operations] == [("create-ci", 1)]


def test_instances_not_in_target_are_destroyed_ci_first() -> None:
    gpu = a100(0, instance(1, "3g.20gb", 0), instance(2, "3g.20gb", 4))
    result = plan([gpu], "all | true | 3g.20gb:1,2g.10gb:2").gpus[0]
    ops = [(op.op, op.gpu_instance_id) for op in result.operations]
    # One 3g is kept; the other's slices host the two 2g instances.
    assert ops[:2] == [("destroy-ci", ops[0][1]), ("destroy-gi", ops[0][1])]
    assert [op.op for op in result.operations[2:]] == ["create-gi", "create-ci"] * 2
    assert sorted(p for p, _ in layout_of(result)) == ["2g.10gb", "2g.10gb", "3g.20gb"]


def test_create_operations_carry_profile_id_not_index_and_placement() -> None:
    result = plan([a100(0)], "all | true | 3g.20gb:1").gpus[0]
    create = result.operations[0]
    assert create.op == "create-gi" and create.profile_id == PROFILE["3g.20gb"].profile_id == 9
    assert create.placement is not None
    assert "nvmlDeviceCreateGpuInstanceWithPlacement(gpu 0, 9, {start: " in create.nvml


# --- busy instances -------------------------------------------------------------------------


def test_busy_instance_is_kept_and_free_slices_relaid() -> None:
    # A 1g at slice 3 runs a job; the idle 2g at 0:2 and 1g at 2 are in the way of the target.
    gpu = a100(0, instance(3, "2g.10gb", 0), instance(9, "1g.5gb", 2), instance(10, "1g.5gb", 3, pids=(4242,)))
    result = plan([gpu], "all | true | 1g.5gb:1,3g.20gb:1,1g.10gb:1").gpus[0]
    assert result.status == "change"
    destroyed = {op.gpu_instance_id for op in result.operations if op.op == "destroy-gi"}
    assert 10 not in destroyed
    busy = [e for e in result.layout if e.busy]
    assert [(e.profile, e.placement.start, e.gpu_instance_id) for e in busy] == [("1g.5gb", 3, 10)]
    assert ("3g.20gb", 4) in layout_of(result)


def test_busy_instance_not_in_target_blocks_and_is_named() -> None:
    gpu = a100(1, instance(11, "1g.5gb", 0, pids=(777,)), instance(12, "1g.5gb", 1))
    result = plan([gpu], "all | true | 7g.40gb:1").gpus[0]
    assert result.status == "blocked" and result.operations == []
    assert len(result.blockers) == 1
    assert "GI 11 (1g.5gb at 0:1) with running processes (pid 777)" in result.blockers[0]


def test_busy_instance_in_the_way_of_placement_blocks_and_is_named() -> None:
    # A 1g.5gb is wanted, but the busy one at slice 4 sits where the 2g.10gb must go once the
    # 4g.20gb takes 0:4 (its only placement): the target cannot be laid out around it.
    gpu = a100(0, instance(7, "1g.5gb", 4, pids=(99,)), instance(8, "1g.5gb", 0))
    result = plan([gpu], "all | true | 1g.5gb:1,4g.20gb:1,2g.10gb:1").gpus[0]
    assert result.status == "blocked" and result.operations == []
    assert result.blockers == [
        "GI 7 (1g.5gb at 4:1) with running processes (pid 99) is in the way: the target cannot be laid out around it"
    ]


def test_force_destroys_busy_instance_only_when_needed() -> None:
    gpu = a100(0, instance(7, "1g.5gb", 4, pids=(99,)), instance(8, "1g.5gb", 0))
    result = plan([gpu], "all | true | 1g.5gb:1,4g.20gb:1,2g.10gb:1", force=True).gpus[0]
    assert result.status == "change"
    destroyed = {op.gpu_instance_id for op in result.operations if op.op == "destroy-gi"}
    assert destroyed == {7, 8}  # neither 1g can stay where it is
    assert layout_of(result) == [("4g.20gb", 0), ("2g.10gb", 4), ("1g.5gb", 6)]
    gpu = a100(0, instance(7, "1g.5gb", 6, pids=(99,)), instance(8, "1g.5gb", 5))
    result = plan([gpu], "all | true | 1g.5gb:1,3g.20gb:1", force=True).gpus[0]
    assert 7 not in [op.gpu_instance_id for op in result.operations if op.op == "destroy-gi"]


def test_disabling_mig_with_busy_instance_is_blocked_unless_forced() -> None:
    gpu = a100(0, instance(1, "3g.20gb", 0, pids=(5,)), instance(2, "3g.20gb", 4))
    blocked = plan([gpu], "all | false").gpus[0]
    assert blocked.status == "blocked" and "must be destroyed to disable MIG" in blocked.blockers[0]
    forced = plan([gpu], "all | false", force=True).gpus[0]
    assert [op.op for op in forced.operations] == [
        "destroy-ci",
        "destroy-gi",
        "destroy-ci",
        "destroy-gi",
        "set-mig-mode",
    ]
    assert forced.operations[-1].mig_enabled is False


# --- the scorer's search (the controller's terms, drivers.gpus.mig_score) ----------------------------

GEOM = table_geometry("NVIDIA A100-SXM4-40GB", A100_40GB)


def free_runs(placed: list[tuple[GiProfile, Placement]], total: int = 8) -> tuple[int, int]:
    """(largest contiguous free run, number of free runs) over memory slices: what the agent's search ranked
    layouts by before it used the scorer. Kept here to show that the scorer's choices are no worse by it."""
    used = {s for _, pl in placed for s in range(pl.start, pl.start + pl.size)}
    runs, length = [], 0
    for s in range(total + 1):
        if s < total and s not in used:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return max(runs, default=0), len(runs)


def test_free_runs() -> None:
    assert free_runs([]) == (8, 1)
    assert free_runs(
        [(PROFILE["1g.5gb"], Placement(start=0, size=1)), (PROFILE["1g.10gb"], Placement(start=2, size=2))]
    ) == (4, 2)


def test_the_scorers_choice_beats_first_fit() -> None:
    # In config order, first fit puts 1g.5gb at 0 and 1g.10gb at 2:2, leaving holes 1 and 4-7 (no 4g, no 2g at 0).
    wanted = [PROFILE["1g.5gb"], PROFILE["1g.10gb"]]
    naive = first_fit_placements(wanted, [])
    assert naive is not None
    assert free_runs(naive) == (4, 2)
    best = best_placements(wanted, [], GEOM)
    assert best is not None
    assert [(p.name, pl.start) for p, pl in best] == [("1g.5gb", 5), ("1g.10gb", 6)]
    # One free run of 5 slices (0-4), and in it the 4g.20gb's only place: the former search's choice (1g.10gb
    # at 0, 1g.5gb at 2) had the same run (3-7) but no 4g place.
    assert free_runs(best) == (5, 1)
    placed = as_layout([(p.name, pl) for p, pl in best])
    assert layout_cost(GEOM, placed) < layout_cost(GEOM, as_layout([(p.name, pl) for p, pl in naive]))
    assert layout_cost(GEOM, placed) < layout_cost(GEOM, ((0, 2, "1g.10gb"), (2, 1, "1g.5gb")))
    # The planner uses the search.
    result = plan([a100(0)], "all | true | 1g.5gb:1,1g.10gb:1").gpus[0]
    assert layout_of(result) == [("1g.5gb", 5), ("1g.10gb", 6)]


def test_fragmentation_around_a_kept_instance() -> None:
    # A busy 1g at slice 1 is kept; a new 2g.10gb fits at 2:2 or 4:2. 2:2 keeps 4-7 free for a 3g.
    gpu = a100(0, instance(12, "1g.5gb", 1, pids=(1,)))
    result = plan([gpu], "all | true | 1g.5gb:1,2g.10gb:1").gpus[0]
    assert layout_of(result) == [("1g.5gb", 1), ("2g.10gb", 2)]


def test_ordering_that_fails_in_nvml_default_placement_is_found() -> None:
    # mig_behaviour_observed.ordering_failure_a100: -cgi 19,19,14,9 fails with NVML's own placement.
    result = plan([a100(0)], "all | true | 1g.5gb:2,2g.10gb:1,3g.20gb:1").gpus[0]
    assert result.status == "change"
    assert sorted(p for p, _ in layout_of(result)) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert ("3g.20gb", 4) in layout_of(result)  # 3g.20gb first at 0:4 would leave no room for 2g + 2 x 1g


def test_planning_is_deterministic() -> None:
    gpu = a100(0, instance(5, "1g.5gb", 6, pids=(1,)))
    a = plan([gpu], "all | true | 1g.5gb:3,2g.10gb:2").gpus[0]
    b = plan([gpu], "all | true | 1g.5gb:3,2g.10gb:2").gpus[0]
    assert a.model_dump() == b.model_dump()


# --- MIG mode -------------------------------------------------------------------------------


def test_enable_mig_then_create() -> None:
    donor = a100(0)
    off = a100(1, mig=False).model_copy(update={"profiles": A100_40GB})
    result = plan([donor, off], "[1] | true | 3g.20gb:2").gpus[1]
    assert [op.op for op in result.operations] == ["set-mig-mode", "create-gi", "create-ci", "create-gi", "create-ci"]


def test_enable_mig_with_unknown_profile_table_defers_creation() -> None:
    result = plan([a100(0, mig=False)], "all | true | 3g.20gb:2").gpus[0]
    assert [op.op for op in result.operations] == ["set-mig-mode"]
    assert result.deferred and "once MIG mode is active" in (result.reason or "")


def test_pending_mode_change_is_reported_not_repeated() -> None:
    pending = a100(0, mig=False, pending=True)
    result = plan([pending], "all | true | 1g.5gb:7").gpus[0]
    assert result.status == "pending-reset" and result.operations == []
    assert result.mig_state == "pending-enable"
    # Pending the opposite way: cancel it (set the mode back), then plan the instances.
    flipped = a100(0, instance(1, "7g.40gb", 0), mig=True, pending=False)
    result = plan([flipped], "all | true | 7g.40gb:1").gpus[0]
    assert [op.op for op in result.operations] == ["set-mig-mode"]
    assert result.operations[0].mig_enabled is True


def test_disabled_gpu_with_disable_target_is_untouched() -> None:
    result = plan([a100(0, mig=False)], "all | false").gpus[0]
    assert result.status == "untouched" and result.operations == []


def test_not_selected_gpu_is_untouched() -> None:
    result = plan([a100(0), a100(1, instance(1, "7g.40gb", 0))], "[0] | true | 7g.40gb:1").gpus[1]
    assert result.status == "untouched" and result.reason == "not selected by the config"


# --- validation -----------------------------------------------------------------------------


def _problems(gpus: list[ObservedGpu], spec: str) -> list[str]:
    with pytest.raises(MigValidationError) as info:
        plan(gpus, spec)
    return info.value.problems


def test_unknown_profile_names_config_entry_device_and_profile() -> None:
    (problem,) = _problems([a100(0)], "all | true | 1g.10gb:2,1g.12gb:1")
    assert problem.startswith("config 'target' entry 1 (devices all) GPU 0 (NVIDIA A100-SXM4-40GB)")
    assert "profile '1g.12gb' does not exist on this GPU" in problem and "1g.5gb" in problem


def test_too_many_instances() -> None:
    (problem,) = _problems([a100(0)], "all | true | 1g.5gb+me:2")
    assert "profile '1g.5gb+me': 2 instances requested, at most 1 fit" in problem


def test_too_many_slices() -> None:
    (problem,) = _problems([a100(0)], "all | true | 3g.20gb:2,2g.10gb:1")
    assert "do not fit together" in problem and "8 compute slices, the GPU has 7" in problem
    (problem,) = _problems([a100(0)], "all | true | 1g.10gb:4,3g.20gb:1")
    assert "no placement of them fits in 8 memory slices" in problem


def test_missing_device_index() -> None:
    (problem,) = _problems([a100(0), a100(1)], "[0] | true | 7g.40gb:1;[5] | false")
    assert problem == "config 'target' entry 2 (devices [5]): GPU 5 does not exist (this host has GPUs 0-1)"


def test_gpu_selected_twice() -> None:
    (problem,) = _problems([a100(0)], "all | false;[0] | false")
    assert "GPU 0 is selected by entry 1 and entry 2" in problem


def test_not_mig_capable() -> None:
    l4 = ObservedGpu(index=0, name="NVIDIA L4", pci_device_id="0x27B810DE", mig_capable=False)
    (problem,) = _problems([l4], "all | true | 1g.5gb:1")
    assert "GPU 0 (NVIDIA L4): GPU is not MIG capable" in problem
    assert plan([l4], "all | false").gpus[0].status == "untouched"


def test_compute_instance_profiles_are_refused_clearly() -> None:
    (problem,) = _problems([a100(0)], "all | true | 1c.3g.20gb:3")
    assert "profile '1c.3g.20gb'" in problem and "not supported" in problem


def test_device_filter_matching_nothing_selects_nothing() -> None:
    text = (
        "version: v1\nmig-configs:\n  target:\n"
        "    - devices: all\n      device-filter: '0x233010DE'\n      mig-enabled: true\n      mig-devices: {1g.10gb: 7}\n"
    )
    result = plan_mig(parse_mig_config(text), "target", [a100(0)])
    assert result.gpus[0].status == "untouched" and result.gpus[0].reason == "not selected by the config"


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems([a100(0), a100(1)], "[0] | true | 9g.99gb:1;[1] | true | 1g.5gb+me:2;[3] | false")
    assert len(problems) == 3


def test_gi_with_split_compute_instances_is_recreated_or_blocks_when_busy() -> None:
    split = instance(1, "3g.20gb", 0).model_copy(
        update={"compute_instances": [ObservedCi(id=i, profile_id=0, slices=1) for i in range(3)]}
    )
    result = plan([a100(0, split, instance(2, "3g.20gb", 4))], "all | true | 3g.20gb:2").gpus[0]
    assert [op.op for op in result.operations] == [
        "destroy-ci",
        "destroy-ci",
        "destroy-ci",
        "destroy-gi",
        "create-gi",
        "create-ci",
    ]
    busy = split.model_copy(update={"processes": [31]})
    result = plan([a100(0, busy, instance(2, "3g.20gb", 4))], "all | true | 3g.20gb:2").gpus[0]
    assert result.status == "blocked" and "compute instances are not the single full-size one" in result.blockers[0]


# --- the controller's placements (one MIG decision) --------------------------------------------


def test_an_instance_the_controller_placed_is_created_exactly_there() -> None:
    """Left alone the planner puts the 3g.20gb at 4 and the 1g.5gbs at 2 and 3 (0-1 stay free for a 2g); pinned
    at 0 by a lease, the 3g goes to 0, and the rest of the config is laid out around it."""
    free = plan([a100(0)], "all | true | 3g.20gb:1,1g.5gb:2").gpus[0]
    assert layout_of(free) == [("1g.5gb", 2), ("1g.5gb", 3), ("3g.20gb", 4)]
    gpu = a100(0)
    gpu.pinned = [("3g.20gb", 0)]
    result = plan([gpu], "all | true | 3g.20gb:1,1g.5gb:2").gpus[0]
    assert result.status == "change"
    assert ("3g.20gb", 0) in layout_of(result)
    created = [(op.profile, op.placement.start) for op in result.operations if op.op == "create-gi"]
    assert ("3g.20gb", 0) in [(p, s) for p, s in created]


def test_a_pinned_instance_next_to_kept_ones() -> None:
    gpu = a100(0, instance(1, "3g.20gb", 0))
    gpu.pinned = [("1g.5gb", 6)]
    result = plan([gpu], "all | true | 3g.20gb:1,1g.5gb:1").gpus[0]
    assert layout_of(result) == [("3g.20gb", 0), ("1g.5gb", 6)]
    assert not any(op.op.startswith("destroy") for op in result.operations)


def test_a_pin_already_created_is_not_created_twice() -> None:
    gpu = a100(0, instance(2, "3g.20gb", 4))
    gpu.pinned = [("3g.20gb", 4)]
    result = plan([gpu], "all | true | 3g.20gb:1").gpus[0]
    assert result.status == "untouched" and result.operations == []


def test_a_pin_a_busy_instance_blocks_is_not_placed_elsewhere() -> None:
    """A process runs on a 1g.5gb at slice 5 (an instance the controller did not know was busy): the lease's
    3g.20gb cannot go to 4:4. The agent does not choose another place (0:4 is free): the GPU is blocked and
    names the instance in the way; nothing is created or destroyed."""
    gpu = a100(0, instance(9, "1g.5gb", 5, pids=(31337,)))
    gpu.pinned = [("3g.20gb", 4)]
    result = plan([gpu], "all | true | 3g.20gb:1,1g.5gb:1").gpus[0]
    assert result.status == "blocked" and result.operations == []
    assert len(result.blockers) == 1 and "in the way" in result.blockers[0] and "1g.5gb" in result.blockers[0]
    forced = plan([gpu], "all | true | 3g.20gb:1,1g.5gb:1", force=True).gpus[0]
    assert ("3g.20gb", 4) in layout_of(forced)


def test_a_pin_off_the_profile_placements_is_not_honoured() -> None:
    gpu = a100(0)
    gpu.pinned = [("3g.20gb", 2)]  # a 3g.20gb starts at 0 or 4 only
    result = plan([gpu], "all | true | 3g.20gb:1").gpus[0]
    assert result.status == "blocked" and result.operations == []
    assert result.blockers == ["lease instance 3g.20gb at start 2: not a placement of 3g.20gb (starts: 0, 4)"]
    assert result.reason == "the controller placed a lease instance where this GPU cannot create it"


def test_two_pins_that_overlap_block_the_gpu_and_name_both() -> None:
    gpu = a100(0)
    gpu.pinned = [("3g.20gb", 4), ("2g.10gb", 4)]  # 4-7 and 4-5
    result = plan([gpu], "all | true | 3g.20gb:1,2g.10gb:1").gpus[0]
    assert result.status == "blocked" and result.operations == []
    assert result.blockers == ["lease instance 2g.10gb at start 4 overlaps lease instance 3g.20gb at start 4"]
