"""Plan MIG changes: from what a GPU has now to what a mig-parted config asks for.

Pure: no NVML here. ``agent.mig.apply`` observes the GPUs through pynvml into the models of
``agent.mig.model`` and runs the operations; keeping the decisions in plain functions lets them be tested exhaustively and
shown to an operator (``gpufabric-agent mig plan``) before anything changes.

Where mig-parted destroys every instance on a GPU it touches, this planner:

* leaves a GPU alone when its instances already satisfy the config;
* keeps instances that fit the target, and never destroys one with running processes unless
  forced; when the target cannot be laid out around a busy instance it names that instance;
* creates the instances the controller placed for leases exactly where it placed them (``pinned``) or, when
  it cannot (an instance with running processes in the way, a placement the profile does not have), blocks the
  GPU and says why: it never places a lease instance itself; it chooses placements for the config's other
  instances (not the controller's: an operator's mig-parted layout) by exhaustive search (``agent.mig.search``;
  a GPU has at most 8 memory slices), ranking complete layouts with the controller's own MIG scorer
  (``drivers.gpus.mig_score.layout_cost``: no profile left without a place, no dead slice, the most capacity
  still creatable), then the highest starts;
* treats a MIG mode change that waits for a GPU reset as a state (``pending-reset``), not as done.

Because every run plans from observed state, an apply interrupted after any operation converges
on the next run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agent.mig.config import MigConfigEntry, MigPartedConfig, is_compute_instance_profile
from agent.mig.model import (
    GiProfile,
    GpuPlan,
    MigPlan,
    MigValidationError,
    ObservedGi,
    ObservedGpu,
    Operation,
    layout_of,
)
from agent.mig.search import (
    Rank,
    as_layout,
    best_placements,
    overlaps,
    pinned_placements,
    rank,
    table_geometry,
)
from drivers.contract.inventory import Placement

# --- validation -----------------------------------------------------------------------------


def _entry_label(config: str, position: int, entry: MigConfigEntry) -> str:
    return f"config {config!r} entry {position} ({entry.describe()})"


def _desired_profiles(entry: MigConfigEntry) -> list[str]:
    return [name for name, count in entry.mig_devices.items() for _ in range(count)]


def assign_entries(
    config: MigPartedConfig, name: str, gpus: Sequence[ObservedGpu]
) -> tuple[dict[int, tuple[int, MigConfigEntry]], list[str]]:
    """Which entry (1-based position) of config ``name`` selects each GPU, and the problems found."""
    entries = config.select(name)
    indexes = {g.index for g in gpus}
    problems: list[str] = []
    assigned: dict[int, tuple[int, MigConfigEntry]] = {}
    for position, entry in enumerate(entries, start=1):
        if entry.devices != "all":
            missing = [i for i in entry.devices if i not in indexes]
            for i in missing:
                have = f"GPUs {min(indexes)}-{max(indexes)}" if indexes else "no GPUs"
                problems.append(f"{_entry_label(name, position, entry)}: GPU {i} does not exist (this host has {have})")
        for gpu in gpus:
            if not entry.selects(gpu.index, gpu.pci_device_id):
                continue
            if gpu.index in assigned:
                problems.append(
                    f"config {name!r}: GPU {gpu.index} is selected by entry {assigned[gpu.index][0]} "
                    f"and entry {position}"
                )
                continue
            assigned[gpu.index] = (position, entry)
    return assigned, problems


def validate_gpu(config: str, position: int, entry: MigConfigEntry, gpu: ObservedGpu) -> list[str]:
    """Problems with applying ``entry`` to ``gpu`` on an empty GPU (independent of what runs now)."""
    where = f"{_entry_label(config, position, entry)} GPU {gpu.index} ({gpu.name})"
    if not entry.mig_enabled:
        return []
    if not gpu.mig_capable:
        return [f"{where}: GPU is not MIG capable, cannot set mig-enabled: true"]
    problems = []
    for requested in entry.mig_devices:
        if is_compute_instance_profile(requested):
            problems.append(
                f"{where}: profile {requested!r}: compute-instance profiles (<C>c.<G>g...) are not supported by "
                "gpufabric yet; use whole GPU-instance profiles"
            )
    if problems or gpu.profiles is None:
        return problems  # profile table unknown until MIG mode is on: checked again then
    offered = ", ".join(p.name for p in sorted(gpu.profiles, key=lambda p: (p.slices, p.memory_mib, p.name)))
    wanted: list[GiProfile] = []
    for profile_name, count in entry.mig_devices.items():
        profile = gpu.profile(profile_name)
        if profile is None:
            problems.append(f"{where}: profile {profile_name!r} does not exist on this GPU (it offers {offered})")
            continue
        if count > profile.max_instances:
            problems.append(
                f"{where}: profile {profile_name!r}: {count} instances requested, at most {profile.max_instances} fit"
            )
        wanted.extend([profile] * count)
    if problems:
        return problems
    geom = table_geometry(gpu.name, gpu.profiles)
    if best_placements(wanted, [], geom) is None:
        compute = sum(p.slices for p in wanted)
        total, memory = (geom.compute_slices, geom.memory_slices) if geom else (0, 0)
        summary = ", ".join(f"{n} x {c}" for n, c in entry.mig_devices.items() if c)
        detail = (
            f"they need {compute} compute slices, the GPU has {total}"
            if compute > total
            else f"no placement of them fits in {memory} memory slices"
        )
        problems.append(f"{where}: profiles {summary} do not fit together: {detail}")
    return problems


def validate_selection(
    config: MigPartedConfig, name: str, gpus: Sequence[ObservedGpu]
) -> dict[int, tuple[int, MigConfigEntry]]:
    """Check config ``name`` against these GPUs; raise ``MigValidationError`` listing every problem."""
    assigned, problems = assign_entries(config, name, gpus)
    by_index = {g.index: g for g in gpus}
    for index, (position, entry) in sorted(assigned.items()):
        problems.extend(validate_gpu(name, position, entry, by_index[index]))
    if problems:
        raise MigValidationError(problems)
    return assigned


# --- planning -------------------------------------------------------------------------------


def _has_default_ci(gi: ObservedGi, profile: GiProfile | None) -> bool:
    slices = profile.slices if profile else None
    return len(gi.compute_instances) == 1 and gi.compute_instances[0].slices == slices


def _reusable(gi: ObservedGi, profile: GiProfile | None) -> bool:
    """A GI counts towards the target if it has the default full CI or none yet (then one is added)."""
    return not gi.compute_instances or _has_default_ci(gi, profile)


def _destroy_ops(gpu: int, gi: ObservedGi) -> list[Operation]:
    ops = [
        Operation(
            op="destroy-ci",
            gpu=gpu,
            nvml=f"nvmlComputeInstanceDestroy(GI {gi.gpu_instance_id} / CI {ci.id})",
            profile=gi.profile,
            gpu_instance_id=gi.gpu_instance_id,
            compute_instance_id=ci.id,
        )
        for ci in gi.compute_instances
    ]
    ops.append(
        Operation(
            op="destroy-gi",
            gpu=gpu,
            nvml=f"nvmlGpuInstanceDestroy(GI {gi.gpu_instance_id})",
            profile=gi.profile,
            profile_id=gi.profile_id,
            placement=gi.placement,
            gpu_instance_id=gi.gpu_instance_id,
        )
    )
    return ops


def _create_ops(gpu: int, profile: GiProfile, placement: Placement) -> list[Operation]:
    return [
        Operation(
            op="create-gi",
            gpu=gpu,
            nvml=(
                f"nvmlDeviceCreateGpuInstanceWithPlacement(gpu {gpu}, {profile.profile_id}, "
                f"{{start: {placement.start}, size: {placement.size}}})"
            ),
            profile=profile.name,
            profile_id=profile.profile_id,
            placement=placement,
        ),
        Operation(
            op="create-ci",
            gpu=gpu,
            nvml=f"nvmlGpuInstanceCreateComputeInstance(<new {profile.name} GI>, <full {profile.slices}-slice CI profile>)",
            profile=profile.name,
            profile_id=profile.profile_id,
            placement=placement,
            slices=profile.slices,
        ),
    ]


def _set_mode_op(gpu: int, enabled: bool) -> Operation:
    return Operation(
        op="set-mig-mode",
        gpu=gpu,
        nvml=f"nvmlDeviceSetMigMode(gpu {gpu}, NVML_DEVICE_MIG_{'ENABLE' if enabled else 'DISABLE'})",
        mig_enabled=enabled,
    )


@dataclass
class _Layout:
    kept: list[ObservedGi]
    created: list[tuple[GiProfile, Placement]]
    destroyed: list[ObservedGi]


def _plan_instances(gpu: ObservedGpu, wanted: list[str], force: bool) -> tuple[_Layout | None, list[str]]:
    """Choose which instances to keep and where to create the rest; ``(None, blockers)`` if impossible."""
    table = gpu.profiles or []
    geom = table_geometry(gpu.name, table)
    want = Counter(wanted)
    profiles = {p.name: p for p in table}
    reusable = [gi for gi in gpu.instances if gi.profile in want and _reusable(gi, profiles.get(gi.profile))]
    doomed = [gi for gi in gpu.instances if gi not in reusable]
    busy_doomed = [gi for gi in doomed if gi.busy]
    if busy_doomed and not force:
        return None, [
            f"{gi.describe()} is not part of the target layout"
            + (
                f" (no {gi.profile} in it)"
                if gi.profile not in want
                else " (its compute instances are not the single full-size one the config implies)"
            )
            for gi in busy_doomed
        ]

    def layout_for(
        keep: Sequence[ObservedGi], pins: Sequence[tuple[str, int]] = ()
    ) -> list[tuple[GiProfile, Placement]] | None:
        remaining = want - Counter(gi.profile for gi in keep)
        if any(v < 0 for v in remaining.values()) or Counter(gi.profile for gi in keep) - want:
            return None
        fixed = pinned_placements(pins, keep, remaining, profiles)
        if fixed is None:
            return None
        remaining -= Counter(p.name for p, _ in fixed)
        to_place = [profiles[name] for name in sorted(remaining.elements())]
        occupied = [(gi.profile, gi.placement) for gi in keep] + [(p.name, pl) for p, pl in fixed]
        rest = best_placements(to_place, occupied, geom)
        return None if rest is None else sorted([*fixed, *rest], key=lambda pp: (pp[1].start, pp[0].profile_id))

    best: tuple[tuple[int, int, Rank], _Layout] | None = None
    busy = [gi for gi in reusable if gi.busy]
    for size in range(len(reusable), -1, -1):
        for keep in itertools.combinations(reusable, size):
            if not force and any(gi not in keep for gi in busy):
                continue
            # The controller's placements exactly: a layout that cannot honour them is no layout (the GPU is
            # then blocked and says why; the controller decided, the agent does not place lease instances).
            created = layout_for(keep, gpu.pinned)
            if created is None:
                continue
            final = as_layout([(gi.profile, gi.placement) for gi in keep] + [(p.name, pl) for p, pl in created])
            busy_lost = sum(1 for gi in busy if gi not in keep) + len(busy_doomed)
            key = (busy_lost, len(reusable) - size, rank(geom, final))
            if best is None or key < best[0]:
                destroyed = doomed + [gi for gi in reusable if gi not in keep]
                best = (key, _Layout(list(keep), created, destroyed))
        if best is not None and best[0][0] == 0:
            break  # keeping more instances always wins over a better score
    if best is not None:
        return best[1], []
    unplaceable = _pin_problems(gpu.pinned, profiles)
    if unplaceable:
        return None, unplaceable
    # Nothing fits around the busy instances: name the ones whose removal would unblock the plan.
    blockers = []
    for gi in busy:
        others = [b for b in busy if b is not gi]
        rest = [r for r in reusable if r is not gi and r not in others]
        if any(
            layout_for(others + list(extra), gpu.pinned) is not None
            for n in range(len(rest) + 1)
            for extra in itertools.combinations(rest, n)
        ):
            blockers.append(f"{gi.describe()} is in the way: the target cannot be laid out around it")
    if not blockers:
        blockers = [f"{gi.describe()} is in the way: the target cannot be laid out around it" for gi in busy]
    return None, blockers


def _pin_problems(pins: Sequence[tuple[str, int]], profiles: dict[str, GiProfile]) -> list[str]:
    """Why the controller's placements cannot be created on this GPU whatever runs on it (else ``[]``)."""
    problems = []
    taken: list[tuple[str, Placement]] = []
    for name, start in pins:
        profile = profiles.get(name)
        placement = next((pl for pl in (profile.placements if profile else []) if pl.start == start), None)
        if placement is None:
            starts = ", ".join(str(pl.start) for pl in profile.placements) if profile else "none"
            problems.append(f"lease instance {name} at start {start}: not a placement of {name} (starts: {starts})")
            continue
        clash = next((other for other, pl in taken if overlaps(pl, placement)), None)
        if clash is not None:
            problems.append(f"lease instance {name} at start {start} overlaps lease instance {clash}")
        taken.append((f"{name} at start {start}", placement))
    return problems


def _ci_missing_ops(gpu: int, gi: ObservedGi, profile: GiProfile | None) -> list[Operation]:
    if gi.compute_instances:
        return []
    slices = profile.slices if profile else None
    return [
        Operation(
            op="create-ci",
            gpu=gpu,
            nvml=f"nvmlGpuInstanceCreateComputeInstance(GI {gi.gpu_instance_id}, <full {slices}-slice CI profile>)",
            profile=gi.profile,
            profile_id=gi.profile_id,
            placement=gi.placement,
            gpu_instance_id=gi.gpu_instance_id,
            slices=slices,
        )
    ]


def plan_gpu(
    gpu: ObservedGpu, entry: MigConfigEntry | None, *, force: bool = False, position: int | None = None
) -> GpuPlan:
    """The operations that take ``gpu`` to what ``entry`` asks (``None``: not selected, left alone)."""
    base = GpuPlan(
        index=gpu.index,
        name=gpu.name,
        status="untouched",
        entry=position,
        mig_enabled=entry.mig_enabled if entry else None,
        mig_state=gpu.mig_state,
        layout=gpu.layout(),
    )
    if entry is None:
        base.reason = "not selected by the config"
        return base
    target = entry.mig_enabled
    if not gpu.mig_capable:
        base.reason = "not MIG capable"  # target true was refused by validation
        return base
    ops: list[Operation] = []
    if gpu.mig_current != gpu.mig_pending:
        if gpu.mig_pending == target:
            base.status = "pending-reset"
            base.reason = (
                f"MIG mode is set to {'enabled' if target else 'disabled'} and takes effect at the next GPU reset"
            )
            return base
        ops.append(_set_mode_op(gpu.index, target))  # cancel the pending opposite change

    if not target:
        if not gpu.mig_current and not ops:
            base.reason = "MIG disabled as asked"
            return base
        busy = [gi for gi in gpu.instances if gi.busy]
        if busy and not force:
            base.status = "blocked"
            base.blockers = [f"{gi.describe()} must be destroyed to disable MIG" for gi in busy]
            return base
        for gi in gpu.instances:
            ops.extend(_destroy_ops(gpu.index, gi))
        if gpu.mig_current and not any(op.op == "set-mig-mode" for op in ops):
            ops.append(_set_mode_op(gpu.index, False))
        base.status, base.operations, base.layout = "change", ops, []
        return base

    wanted = _desired_profiles(entry)
    if not gpu.mig_current:
        if not any(op.op == "set-mig-mode" for op in ops):
            ops.append(_set_mode_op(gpu.index, True))
        base.status, base.operations, base.layout = "change", ops, []
        if wanted and gpu.profiles is None:
            base.deferred = True
            base.reason = "instances are planned once MIG mode is active (NVML lists profiles only then)"
            return base
        empty = gpu.model_copy(update={"instances": []})
        layout, _ = _plan_instances(empty, wanted, force)
        assert layout is not None, "validated configs fit on an empty GPU"
        for profile, placement in layout.created:
            ops.extend(_create_ops(gpu.index, profile, placement))
        base.layout = layout_of((), layout.created)
        return base

    layout, blockers = _plan_instances(gpu, wanted, force)
    if layout is None:
        base.status, base.blockers = "blocked", blockers
        base.reason = (
            "the controller placed a lease instance where this GPU cannot create it"
            if any(b.startswith("lease instance") for b in blockers)
            else "the target layout needs an instance that has running processes (use --force to destroy it)"
        )
        return base
    profiles = {p.name: p for p in gpu.profiles or []}
    for gi in sorted(layout.destroyed, key=lambda g: g.placement.start):
        ops.extend(_destroy_ops(gpu.index, gi))
    for gi in sorted(layout.kept, key=lambda g: g.placement.start):
        ops.extend(_ci_missing_ops(gpu.index, gi, profiles.get(gi.profile)))
    for profile, placement in layout.created:
        ops.extend(_create_ops(gpu.index, profile, placement))
    base.layout = layout_of(layout.kept, layout.created)
    if ops:
        base.status, base.operations = "change", ops
    else:
        base.reason = "current instances already satisfy the config"
    return base


def plan_mig(config: MigPartedConfig, name: str, gpus: Sequence[ObservedGpu], *, force: bool = False) -> MigPlan:
    """Validate config ``name`` against the observed GPUs and plan every GPU.

    Raises ``MigConfigError`` for an unknown config name and ``MigValidationError`` (with every
    problem, each naming config, entry, GPU and profile) before anything is planned.
    """
    assigned = validate_selection(config, name, gpus)
    plans = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        position, entry = assigned.get(gpu.index, (None, None))
        plans.append(plan_gpu(gpu, entry, force=force, position=position))
    return MigPlan(config=name, source=config.source, force=force, gpus=plans)
