"""Plan MIG changes: from what a GPU has now to what a mig-parted config asks for.

Pure: no NVML here. ``agent.mig.apply`` observes the GPUs through pynvml into the models below and
runs the operations; keeping the decisions in plain functions lets them be tested exhaustively and
shown to an operator (``gpufabric-agent mig plan``) before anything changes.

Where mig-parted destroys every instance on a GPU it touches, this planner:

* leaves a GPU alone when its instances already satisfy the config;
* keeps instances that fit the target, and never destroys one with running processes unless
  forced; when the target cannot be laid out around a busy instance it names that instance;
* chooses placements for new instances by exhaustive search (a GPU has at most 8 memory slices),
  preferring the layout that leaves the largest contiguous free range, then the fewest holes;
* treats a MIG mode change that waits for a GPU reset as a state (``pending-reset``), not as done.

Because every run plans from observed state, an apply interrupted after any operation converges
on the next run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.mig.config import MigConfigEntry, MigError, MigPartedConfig, is_compute_instance_profile
from drivers.contract.inventory import Placement


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GiProfile(_Model):
    """A GPU-instance profile as NVML reports it for one GPU."""

    name: str = Field(description="e.g. 1g.5gb, 1g.5gb+me")
    profile_id: int = Field(description="nvmlGpuInstanceProfileInfo_t.id: what create/placement calls take")
    profile_index: int = Field(description="NVML_GPU_INSTANCE_PROFILE_* index used to look the profile up")
    slices: int = Field(description="compute slices (sliceCount)")
    memory_mib: int = 0
    max_instances: int
    placements: list[Placement]


class ObservedCi(_Model):
    id: int
    profile_id: int
    slices: int


class ObservedGi(_Model):
    gpu_instance_id: int
    profile: str
    profile_id: int
    placement: Placement
    compute_instances: list[ObservedCi] = Field(default_factory=list)
    processes: list[int] = Field(default_factory=list, description="PIDs running on this instance")
    leased: bool = Field(False, description="a controller lease holds this instance (kept like a busy one)")

    @property
    def busy(self) -> bool:
        return bool(self.processes) or self.leased

    def describe(self) -> str:
        text = f"GI {self.gpu_instance_id} ({self.profile} at {_span(self.placement)})"
        if self.processes:
            text += f" with running processes (pid {', '.join(str(p) for p in self.processes)})"
        if self.leased:
            text += " held by a lease"
        return text


MigModeState = Literal["unsupported", "disabled", "enabled", "pending-enable", "pending-disable"]


class ObservedGpu(_Model):
    index: int
    name: str
    pci_device_id: str = Field(description="0xDDDDVVVV as in mig-parted device-filter")
    mig_capable: bool
    mig_current: bool = False
    mig_pending: bool = False
    profiles: list[GiProfile] | None = Field(
        default=None, description="None when NVML cannot list profiles (MIG mode off on a real GPU)"
    )
    profiles_borrowed_from: int | None = Field(
        default=None, description="index of a GPU of the same model whose profile table was used"
    )
    instances: list[ObservedGi] = Field(default_factory=list)

    @property
    def mig_state(self) -> MigModeState:
        if not self.mig_capable:
            return "unsupported"
        if self.mig_current == self.mig_pending:
            return "enabled" if self.mig_current else "disabled"
        return "pending-enable" if self.mig_pending else "pending-disable"

    def profile(self, name: str) -> GiProfile | None:
        return next((p for p in self.profiles or [] if p.name == name), None)

    def layout(self) -> list[LayoutEntry]:
        return sorted(
            (
                LayoutEntry(
                    profile=gi.profile,
                    profile_id=gi.profile_id,
                    placement=gi.placement,
                    gpu_instance_id=gi.gpu_instance_id,
                    state="kept",
                    busy=gi.busy,
                )
                for gi in self.instances
            ),
            key=lambda e: (e.placement.start, e.profile_id),
        )


OperationKind = Literal["set-mig-mode", "destroy-ci", "destroy-gi", "create-gi", "create-ci"]


class Operation(_Model):
    """One mutating NVML call."""

    op: OperationKind
    gpu: int
    nvml: str = Field(description="the pynvml call, for people")
    mig_enabled: bool | None = None
    profile: str | None = None
    profile_id: int | None = None
    placement: Placement | None = None
    gpu_instance_id: int | None = Field(default=None, description="existing GI (destroy, create-ci on a kept GI)")
    compute_instance_id: int | None = None
    slices: int | None = Field(default=None, description="create-ci: the GI's slices (full compute instance)")


class LayoutEntry(_Model):
    profile: str
    profile_id: int
    placement: Placement
    gpu_instance_id: int | None = Field(default=None, description="None for an instance still to be created")
    state: Literal["kept", "created"]
    busy: bool = False


GpuPlanStatus = Literal["untouched", "change", "pending-reset", "blocked"]


class GpuPlan(_Model):
    index: int
    name: str
    status: GpuPlanStatus
    entry: int | None = Field(default=None, description="1-based config entry that selects this GPU")
    mig_enabled: bool | None = Field(default=None, description="target MIG mode (None: not selected)")
    mig_state: MigModeState
    reason: str | None = None
    blockers: list[str] = Field(default_factory=list)
    operations: list[Operation] = Field(default_factory=list)
    layout: list[LayoutEntry] = Field(default_factory=list, description="instances after the operations")
    deferred: bool = Field(
        default=False,
        description="instances are created after MIG mode becomes active (profile table unknown until then)",
    )


class MigPlan(_Model):
    config: str
    source: str
    force: bool = False
    gpus: list[GpuPlan]

    @property
    def blocked(self) -> bool:
        return any(g.status == "blocked" for g in self.gpus)

    @property
    def operations(self) -> list[Operation]:
        return [op for g in self.gpus for op in g.operations]


class MigValidationError(MigError):
    """The selected config cannot be applied to this host; nothing was changed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# --- placement search -----------------------------------------------------------------------


def _span(p: Placement) -> str:
    return f"{p.start}:{p.size}"


def memory_slice_count(profiles: Iterable[GiProfile]) -> int:
    """Memory slices of the GPU: the end of the furthest placement (8 on A100/H100, 4 on A30)."""
    return max((pl.start + pl.size for p in profiles for pl in p.placements), default=0)


def compute_slice_count(profiles: Iterable[GiProfile]) -> int:
    """Compute slices of the GPU: those of its largest profile (7g -> 7)."""
    return max((p.slices for p in profiles), default=0)


def fragmentation_score(occupied: Iterable[Placement], total: int) -> tuple[int, int]:
    """(largest contiguous free run, number of free runs) over memory slices."""
    used = [False] * total
    for p in occupied:
        for s in range(p.start, min(p.start + p.size, total)):
            used[s] = True
    runs: list[int] = []
    length = 0
    for taken in [*used, True]:
        if taken:
            if length:
                runs.append(length)
            length = 0
        else:
            length += 1
    return (max(runs, default=0), len(runs))


def _overlaps(a: Placement, b: Placement) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


@dataclass(frozen=True)
class _Candidate:
    placed: tuple[tuple[GiProfile, Placement], ...]
    key: tuple[int, int, tuple[tuple[int, int], ...]]


def best_placements(
    to_place: Sequence[GiProfile],
    occupied: Sequence[tuple[int, Placement]],
    table: Sequence[GiProfile],
) -> list[tuple[GiProfile, Placement]] | None:
    """Place every profile in ``to_place`` around ``occupied`` (profile id, placement) pairs.

    Exhaustive: among all layouts that fit, return the one leaving the largest contiguous free
    range, then the fewest free holes, then the lowest starts (a total order, so the same inputs
    always give the same answer - which is what makes interrupted applies converge to the same
    layout). ``None`` when nothing fits.
    """
    total = memory_slice_count(table)
    compute_total = compute_slice_count(table)
    by_id = {p.profile_id: p for p in table}
    used_compute = sum(by_id[pid].slices for pid, _ in occupied if pid in by_id)
    if used_compute + sum(p.slices for p in to_place) > compute_total:
        return None
    counts = Counter(pid for pid, _ in occupied)
    counts.update(p.profile_id for p in to_place)
    if any(counts[pid] > by_id[pid].max_instances for pid in counts if pid in by_id):
        return None
    # Big instances first prunes the search early; same-profile instances take increasing starts
    # so that permutations of identical instances are not explored twice.
    order = sorted(to_place, key=lambda p: (-max((pl.size for pl in p.placements), default=0), p.profile_id))
    best: _Candidate | None = None
    taken: list[Placement] = [pl for _, pl in occupied]
    chosen: list[tuple[GiProfile, Placement]] = []

    def search(i: int) -> None:
        nonlocal best
        if i == len(order):
            largest, holes = fragmentation_score(taken, total)
            starts = tuple(sorted((pl.start, p.profile_id) for p, pl in chosen))
            candidate = _Candidate(tuple(chosen), (-largest, holes, starts))
            if best is None or candidate.key < best.key:
                best = candidate
            return
        profile = order[i]
        floor = -1
        if i > 0 and order[i - 1].profile_id == profile.profile_id:
            floor = chosen[-1][1].start
        for pl in sorted(profile.placements, key=lambda p: p.start):
            if pl.start <= floor or any(_overlaps(pl, t) for t in taken):
                continue
            taken.append(pl)
            chosen.append((profile, pl))
            search(i + 1)
            chosen.pop()
            taken.pop()

    search(0)
    if best is None:
        return None
    return sorted(best.placed, key=lambda pp: (pp[1].start, pp[0].profile_id))


def first_fit_placements(
    to_place: Sequence[GiProfile], occupied: Sequence[tuple[int, Placement]]
) -> list[tuple[GiProfile, Placement]] | None:
    """The naive strategy (each instance in the given order at its lowest free placement).

    Kept as the baseline the fragmentation-aware search is measured against in tests and docs.
    """
    taken = [pl for _, pl in occupied]
    result = []
    for profile in to_place:
        spot = next(
            (
                pl
                for pl in sorted(profile.placements, key=lambda p: p.start)
                if not any(_overlaps(pl, t) for t in taken)
            ),
            None,
        )
        if spot is None:
            return None
        taken.append(spot)
        result.append((profile, spot))
    return result


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
    if best_placements(wanted, [], gpu.profiles) is None:
        compute = sum(p.slices for p in wanted)
        total = compute_slice_count(gpu.profiles)
        summary = ", ".join(f"{n} x {c}" for n, c in entry.mig_devices.items() if c)
        detail = (
            f"they need {compute} compute slices, the GPU has {total}"
            if compute > total
            else f"no placement of them fits in {memory_slice_count(gpu.profiles)} memory slices"
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

    def layout_for(keep: Sequence[ObservedGi]) -> list[tuple[GiProfile, Placement]] | None:
        remaining = want - Counter(gi.profile for gi in keep)
        if any(v < 0 for v in remaining.values()) or Counter(gi.profile for gi in keep) - want:
            return None
        to_place = [profiles[name] for name in sorted(remaining.elements())]
        return best_placements(to_place, [(gi.profile_id, gi.placement) for gi in keep], table)

    best: tuple[tuple[int, int, tuple[int, int, tuple[tuple[int, int], ...]]], _Layout] | None = None
    busy = [gi for gi in reusable if gi.busy]
    for size in range(len(reusable), -1, -1):
        for keep in itertools.combinations(reusable, size):
            if not force and any(gi not in keep for gi in busy):
                continue
            created = layout_for(keep)
            if created is None:
                continue
            occupied = [gi.placement for gi in keep] + [pl for _, pl in created]
            largest, holes = fragmentation_score(occupied, memory_slice_count(table))
            starts = tuple(sorted([(gi.placement.start, gi.profile_id) for gi in keep]
                                  + [(pl.start, p.profile_id) for p, pl in created]))  # fmt: skip
            busy_lost = sum(1 for gi in busy if gi not in keep) + len(busy_doomed)
            key = (busy_lost, len(reusable) - size, (-largest, holes, starts))
            if best is None or key < best[0]:
                destroyed = doomed + [gi for gi in reusable if gi not in keep]
                best = (key, _Layout(list(keep), created, destroyed))
        if best is not None and best[0][0] == 0:
            break  # keeping more instances always wins over a better fragmentation score
    if best is not None:
        return best[1], []
    # Nothing fits around the busy instances: name the ones whose removal would unblock the plan.
    blockers = []
    for gi in busy:
        others = [b for b in busy if b is not gi]
        rest = [r for r in reusable if r is not gi and r not in others]
        if any(
            layout_for(others + list(extra)) is not None
            for n in range(len(rest) + 1)
            for extra in itertools.combinations(rest, n)
        ):
            blockers.append(f"{gi.describe()} is in the way: the target cannot be laid out around it")
    if not blockers:
        blockers = [f"{gi.describe()} is in the way: the target cannot be laid out around it" for gi in busy]
    return None, blockers


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
        base.layout = [
            LayoutEntry(profile=p.name, profile_id=p.profile_id, placement=pl, state="created")
            for p, pl in layout.created
        ]
        return base

    layout, blockers = _plan_instances(gpu, wanted, force)
    if layout is None:
        base.status, base.blockers = "blocked", blockers
        base.reason = "the target layout needs an instance that has running processes (use --force to destroy it)"
        return base
    profiles = {p.name: p for p in gpu.profiles or []}
    for gi in sorted(layout.destroyed, key=lambda g: g.placement.start):
        ops.extend(_destroy_ops(gpu.index, gi))
    for gi in sorted(layout.kept, key=lambda g: g.placement.start):
        ops.extend(_ci_missing_ops(gpu.index, gi, profiles.get(gi.profile)))
    for profile, placement in layout.created:
        ops.extend(_create_ops(gpu.index, profile, placement))
    entries = [
        LayoutEntry(
            profile=gi.profile,
            profile_id=gi.profile_id,
            placement=gi.placement,
            gpu_instance_id=gi.gpu_instance_id,
            state="kept",
            busy=gi.busy,
        )
        for gi in layout.kept
    ] + [
        LayoutEntry(profile=p.name, profile_id=p.profile_id, placement=pl, state="created") for p, pl in layout.created
    ]
    base.layout = sorted(entries, key=lambda e: (e.placement.start, e.profile_id))
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
