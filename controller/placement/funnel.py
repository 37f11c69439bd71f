"""The refusal funnel: per filter, how many hosts and devices it removed (with examples), and the nearest fit.

Filters run in a fixed order (``controller.placement.filters``) and a candidate is counted against the first
filter it fails. ``explain`` gives what running every filter over every host would (``explain_exhaustive``,
kept as the reference the tests compare against) without walking the hosts: it evaluates one host per
signature group of the index (``Index.coarse`` / ``Index.fine``) and multiplies by the group's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.placement import mig
from controller.placement.filters import (
    ALL_FILTERS,
    DEVICE_FILTERS,
    Demand,
    device_free_units,
    device_stage,
    host_failures,
    kind_model_stage,
    memory_ok,
    model_matches,
)
from controller.placement.index import Group, Index
from controller.placement.model import KIND_MODE, Device, Host
from controller.placement.request import PlacementRequest
from controller.placement.topology import DOMAIN_ATTR, topology_reason


def _shape(host: Host) -> tuple[str, str] | None:
    """(mode, model) shared by every GPU of the host, or None if they differ."""
    if not host.devices:
        return None
    d0 = host.devices[0]
    mode, model = d0.mode, d0.model
    for d in host.devices:
        if d.mode != mode or d.model != model:
            return None
    return mode, model


# --- the refusal funnel ----------------------------------------------------------------------------------


@dataclass(slots=True)
class FilterCount:
    name: str
    removed_hosts: int = 0
    removed_devices: int = 0
    examples: list[str] = field(default_factory=list)
    # The examples without the host they are about (what a tenant is shown: controller.placement.decision).
    reasons: list[str] = field(default_factory=list)

    def note(self, example: str, reason: str | None = None) -> None:
        if len(self.examples) < 3 and example not in self.examples:
            self.examples.append(example)
            self.reasons.append(example if reason is None else reason)


@dataclass(slots=True)
class NearestFit:
    host_id: str
    satisfied: float  # share of the per-node request this host could serve now
    have: dict[str, int]  # per slice entry: units it could give
    missing: list[str]


@dataclass(slots=True)
class Funnel:
    hosts: int
    devices: int
    filters: list[FilterCount]
    fitting_hosts: int
    nearest_fit: NearestFit | None


def _shape_stage(
    shape: tuple[str, str], demands: list[Demand], cache: dict[tuple[str, str], tuple[int, str] | None]
) -> tuple[int, str] | None:
    """For hosts whose GPUs are all one model in one mode: the furthest filter stage any demand's kind/model
    check lets them reach and why they stop there, or ``None`` when some demand passes it (look at the GPUs)."""
    if shape not in cache:
        stages = [kind_model_stage(shape[0], shape[1], dm) for dm in demands]
        cache[shape] = (
            None if any(st is None for st in stages) else max((st for st in stages if st), key=lambda x: x[0])
        )
    return cache[shape]


def explain_exhaustive(
    req: PlacementRequest,
    demands: list[Demand],
    hosts: Iterable[Host],
    fits: Callable[[Host], bool],
    topology_ok: Callable[[list[Host]], str | None],
) -> Funnel:
    """Run every filter over every host: the reference for ``explain`` (O(hosts x GPUs); tests only)."""
    counts = {name: FilterCount(name) for name in ALL_FILTERS}
    n_hosts = n_devices = 0
    fitting: list[Host] = []
    best: tuple[float, int, str] | None = None
    best_fit: NearestFit | None = None
    total_need = sum(d.count for d in demands) or 1
    cache: dict[tuple[object, ...], tuple[int, str]] = {}
    shape_cache: dict[tuple[str, str], tuple[int, str] | None] = {}
    for host in hosts:
        n_hosts += 1
        n_devices += len(host.devices)
        failures = host_failures(host, req)
        # Most hosts hold one model in one mode: if that cannot serve any demand, skip the per-GPU walk.
        shape = _shape(host)
        if shape is not None:
            early = _shape_stage(shape, demands, shape_cache)
            if early is not None:
                rank0 = (0.0, -len(failures))
                if best is None or rank0 > best[:2]:
                    best = (*rank0, host.id)
                    best_fit = NearestFit(
                        host.id,
                        0.0,
                        {dm.slice.describe(): 0 for dm in demands},
                        [r for _, r in failures] + [f"all GPUs: {early[1]}"],
                    )
                name = failures[0][0] if failures else DEVICE_FILTERS[early[0]]
                c = counts[name]
                c.removed_hosts += 1
                if failures:
                    c.removed_devices += len(host.devices)
                    c.note(f"{host.id}: {failures[0][1]}", failures[0][1])
                else:
                    c.removed_devices += len(host.devices)
                    c.note(f"{host.id} all GPUs: {early[1]}", f"all GPUs: {early[1]}")
                continue
        # Device funnel: a device reaches the furthest stage any demand lets it reach.
        have: dict[str, int] = {dm.slice.describe(): 0 for dm in demands}
        furthest = -1
        dev_stages: list[tuple[int, str, int]] = []
        for d in host.devices:
            best_stage, best_reason = -1, ""
            for dm in demands:
                stage, reason = device_stage(host, d, dm, cache)
                if stage == len(DEVICE_FILTERS):
                    have[dm.slice.describe()] += device_free_units(host, d, dm)
                if stage > best_stage:
                    best_stage, best_reason = stage, reason
            dev_stages.append((best_stage, best_reason, d.index))
            furthest = max(furthest, best_stage)
        for dm in demands:
            have[dm.slice.describe()] = min(have[dm.slice.describe()], dm.count)
        satisfied = sum(have.values()) / total_need
        missing = [r for _, r in failures]
        for dm in demands:
            got = have[dm.slice.describe()]
            if got < dm.count:
                reasons = sorted({f"GPU {i}: {r}" for (_st, r, i) in dev_stages if r})[:2]
                missing.append(
                    f"{dm.slice.describe()}: {got} available" + (f" ({'; '.join(reasons)})" if reasons else "")
                )
        rank = (satisfied, -len(failures), host.id)
        if best is None or rank[:2] > best[:2]:
            best = rank
            best_fit = NearestFit(host.id, round(satisfied, 3), have, missing)
        if failures:
            name, reason = failures[0]
            counts[name].removed_hosts += 1
            counts[name].removed_devices += len(host.devices)
            counts[name].note(f"{host.id}: {reason}", reason)
            continue
        if furthest < len(DEVICE_FILTERS):
            stage_name = DEVICE_FILTERS[max(furthest, 0)]
            counts[stage_name].removed_hosts += 1
        for stage, reason, idx in dev_stages:
            if stage < len(DEVICE_FILTERS):
                c = counts[DEVICE_FILTERS[stage]]
                c.removed_devices += 1
                c.note(f"{host.id} GPU {idx}: {reason}", f"GPU {idx}: {reason}")
        if furthest < len(DEVICE_FILTERS):
            continue
        if not fits(host):
            counts["fit"].removed_hosts += 1
            counts["fit"].note(
                f"host {host.id} has some but not all of {req.describe()}", f"has some but not all of {req.describe()}"
            )
            continue
        fitting.append(host)
    if fitting:
        topo_reason = topology_ok(fitting)
        if topo_reason is not None:
            counts["topology"].removed_hosts = len(fitting)
            counts["topology"].note(topo_reason)
            fitting = []
    return Funnel(n_hosts, n_devices, [c for c in counts.values()], len(fitting), best_fit)


# --- the refusal funnel over the index's signature groups ------------------------------------------------

_ALL_PASS = len(DEVICE_FILTERS)


def device_room(host: Host, d: Device, demand: Demand) -> int:
    """An upper bound on the units ``host_plan.plan_host`` can take from this GPU for the demand.

    Same device filter as the planner (mode, health, model, quota, memory); for MIG, free instances of an
    acceptable profile plus, on on-demand pools, the instances of each acceptable profile still creatable
    (summed over profiles: creating one profile never makes room for another).
    """
    s = demand.slice
    if d.mode != KIND_MODE[s.kind] or not d.usable or not model_matches(s.model, d.model):
        return 0
    if d.model in demand.quota_blocked:
        return 0
    if s.kind == "gpu":
        return 1 if d.claimed_by is None and memory_ok(d.memory_mib, s.min_memory_mib) else 0
    if s.kind in ("timeslice", "mps"):
        return max(0, d.share_free()) if memory_ok(d.memory_mib, s.min_memory_mib) else 0
    variants = demand.variants.get(d.model, [])
    if s.kind == "vgpu":
        return d.vgpu_free_of(variants)
    n = sum(1 for m in d.mig_instances if m.claimed_by is None and not m.pending and m.profile in variants)
    if host.on_demand_mig:
        layout = d.mig_layout()
        n += sum(mig.creatable(d.model, layout, p) for p in variants)
    return n


@dataclass(slots=True)
class _GpuOutcome:
    """What a host's GPUs give the request: the same for every host whose GPUs give the same per-GPU results."""

    have: dict[str, int]
    satisfied: float
    furthest: int
    stages: list[tuple[int, str, int]]  # per GPU: furthest stage, its reason, GPU index
    room: bool  # every demand's upper bound (``device_room``) reaches its count; if not, nothing fits
    removed: list[tuple[str, int]]  # device filter -> GPUs it removed, in filter order of first GPU

    def missing(self, demands: list[Demand]) -> list[str]:
        out: list[str] = []
        for dm in demands:
            name = dm.slice.describe()
            got = self.have[name]
            if got < dm.count:
                reasons = sorted({f"GPU {i}: {r}" for (_st, r, i) in self.stages if r})[:2]
                out.append(f"{name}: {got} available" + (f" ({'; '.join(reasons)})" if reasons else ""))
        return out

    def notes(self, fname: str) -> list[tuple[str, str]]:
        return [
            ("", f" GPU {idx}: {reason}")
            for stage, reason, idx in self.stages
            if stage < _ALL_PASS and DEVICE_FILTERS[stage] == fname
        ]


# What one GPU gives the request: furthest stage, its reason, free units and upper bound per demand, GPU index.
_GpuHit = tuple[int, str, tuple[int, ...], tuple[int, ...], int]


def _gpu_hit(
    host: Host, d: Device, demands: list[Demand], stage_cache: dict[tuple[object, ...], tuple[int, str]]
) -> _GpuHit:
    best_stage, best_reason = -1, ""
    units: list[int] = []
    for dm in demands:
        stage, reason = device_stage(host, d, dm, stage_cache)
        units.append(device_free_units(host, d, dm) if stage == _ALL_PASS else 0)
        if stage > best_stage:
            best_stage, best_reason = stage, reason
    return best_stage, best_reason, tuple(units), tuple(device_room(host, d, dm) for dm in demands), d.index


def _gpu_outcome(hits: list[_GpuHit], demands: list[Demand], names: list[str], total_need: int) -> _GpuOutcome:
    """The device part of ``explain_exhaustive``'s per-host step, from the per-GPU results."""
    have: dict[str, int] = dict.fromkeys(names, 0)
    room = [0] * len(demands)
    furthest = -1
    for stage, _reason, units, rooms, _idx in hits:
        for j, u in enumerate(units):
            if u:
                have[names[j]] += u
        for j, r in enumerate(rooms):
            room[j] += r
        if stage > furthest:
            furthest = stage
    for dm, name in zip(demands, names, strict=True):
        have[name] = min(have[name], dm.count)
    satisfied = sum(have.values()) / total_need
    enough = all(r >= dm.count for r, dm in zip(room, demands, strict=True))
    removed: dict[str, int] = {}
    for h in hits:
        if h[0] < _ALL_PASS:
            fname = DEVICE_FILTERS[h[0]]
            removed[fname] = removed.get(fname, 0) + 1
    stages = [(h[0], h[1], h[4]) for h in hits]
    return _GpuOutcome(have, satisfied, furthest, stages, enough, list(removed.items()))


def explain(
    req: PlacementRequest,
    demands: list[Demand],
    index: Index,
    fits: Callable[[Host], bool],
) -> Funnel:
    """The funnel ``explain_exhaustive`` computes over every host, from the index's signature groups.

    Per coarse group (hosts alike at host level) the host filters, and the slice-kind / model filters on the
    group's GPU shape, are checked once; only groups whose GPUs could serve a demand are split into fine
    groups (hosts alike GPU by GPU), each evaluated once (GPU results memoised by device signature, ``fits``
    by fine signature). Examples and the nearest fit are the first in host order, as in the exhaustive walk.
    Cost: O(groups + examples), not O(hosts x GPUs).
    """
    counts = {name: FilterCount(name) for name in ALL_FILTERS}
    # filter -> groups whose hosts note something for it, with their GPU outcome (None: host-level notes)
    notes: dict[str, list[tuple[Group, _GpuOutcome | None, list[tuple[str, str]]]]] = {n: [] for n in ALL_FILTERS}
    names = [dm.slice.describe() for dm in demands]
    total_need = sum(d.count for d in demands) or 1
    stage_cache: dict[tuple[object, ...], tuple[int, str]] = {}
    # Per-GPU results, numbered, by device signature; GPU outcomes by the numbers (fewer than fine groups).
    gpu_ids: dict[tuple[object, ...], int] = {}
    gpu_hits: list[_GpuHit] = []
    outcomes: dict[tuple[int, ...], _GpuOutcome] = {}
    hit = gpu_ids.__getitem__
    fit_note = [("host ", f" has some but not all of {req.describe()}")]
    shape_cache: dict[tuple[str, str], tuple[int, str] | None] = {}
    # Nearest fit: the best (satisfied, -host filters failed); the groups reaching it, with their reasons.
    best_rank: tuple[float, int] | None = None
    best: list[tuple[Group, list[tuple[str, str]], _GpuOutcome | None, str | None]] = []
    fitting: list[Group] = []
    hosts = index.hosts

    def consider(
        rank: tuple[float, int],
        g: Group,
        failures: list[tuple[str, str]],
        out: _GpuOutcome | None,
        early_reason: str | None,
    ) -> None:
        nonlocal best_rank, best
        if best_rank is None or rank > best_rank:
            best_rank, best = rank, [(g, failures, out, early_reason)]
        elif rank == best_rank:
            best.append((g, failures, out, early_reason))

    for ck, cgroup in index.coarse.items():
        n_dev = ck[8]
        failures = host_failures(hosts[cgroup.any()], req)
        shape = ck[7]
        early: tuple[int, str] | None = None
        if shape is not None:
            early = _shape_stage(shape, demands, shape_cache)
        if early is not None:
            # No GPU of these hosts can serve any demand: count the whole group without looking at GPUs.
            n = len(cgroup)
            consider((0.0, -len(failures)), cgroup, failures, None, early[1])
            name = failures[0][0] if failures else DEVICE_FILTERS[early[0]]
            counts[name].removed_hosts += n
            counts[name].removed_devices += n * n_dev
            notes[name].append((cgroup, None, [("", f": {failures[0][1]}" if failures else f" all GPUs: {early[1]}")]))
            continue
        nf = len(failures)
        for fk, fgroup in index.fine[ck].items():
            m = len(fgroup)
            try:
                hk = tuple(map(hit, fk))
            except KeyError:
                rep = hosts[fgroup.any()]
                for d, sig in zip(rep.devices, fk, strict=True):
                    if sig not in gpu_ids:
                        gpu_ids[sig] = len(gpu_hits)
                        gpu_hits.append(_gpu_hit(rep, d, demands, stage_cache))
                hk = tuple(map(hit, fk))
            out = outcomes.get(hk)
            if out is None:
                out = outcomes[hk] = _gpu_outcome([gpu_hits[i] for i in hk], demands, names, total_need)
            rank = (out.satisfied, -nf)
            if best_rank is None or rank >= best_rank:
                consider(rank, fgroup, failures, out, None)
            if failures:
                name, reason = failures[0]
                counts[name].removed_hosts += m
                counts[name].removed_devices += m * n_dev
                notes[name].append((fgroup, None, [("", f": {reason}")]))
                continue
            furthest = out.furthest
            if furthest < _ALL_PASS:
                counts[DEVICE_FILTERS[max(furthest, 0)]].removed_hosts += m
            for fname, k in out.removed:
                counts[fname].removed_devices += m * k
                notes[fname].append((fgroup, out, []))
            if furthest < _ALL_PASS:
                continue
            # Hosts of one fine group are alike GPU by GPU, so the planner's answer is the same for all of them.
            if not (out.room and fits(hosts[fgroup.any()])):
                counts["fit"].removed_hosts += m
                notes["fit"].append((fgroup, None, fit_note))
                continue
            fitting.append(fgroup)

    # Examples: the first notes in host order. A group's first host precedes its others, so the first three
    # hosts noting a filter are among the first three of the three groups whose first hosts come first.
    for name, entries in notes.items():
        if not entries:
            continue
        if len(entries) > 3:
            firsts = sorted([(e[0].first_seq(), i) for i, e in enumerate(entries)])[:3]
            entries = [entries[i] for _, i in firsts]
        cands = sorted(
            (seq, hid, out.notes(name) if out is not None else tmpl)
            for g, out, tmpl in entries
            for seq, hid in g.first(3)
        )
        c = counts[name]
        for _seq, hid, tmpl in cands:
            for pre, suf in tmpl:
                c.note(pre + hid + suf, suf.lstrip(" :"))
            if len(c.examples) >= 3:
                break

    nearest: NearestFit | None = None
    if best:
        g, failures, out, early_reason = min(best, key=lambda e: e[0].first_seq())
        host_id = g.first(1)[0][1]
        missing = [r for _, r in failures]
        if out is None:
            nearest = NearestFit(host_id, 0.0, dict.fromkeys(names, 0), [*missing, f"all GPUs: {early_reason}"])
        else:
            nearest = NearestFit(host_id, round(out.satisfied, 3), dict(out.have), missing + out.missing(demands))

    n_fitting = sum(len(g) for g in fitting)
    if n_fitting:

        def by_domain(topology: str) -> Counter[str | None]:
            attr = DOMAIN_ATTR[topology]
            out: Counter[str | None] = Counter()
            for g in fitting:
                out.update(g.domain_counts(attr))
            return out

        topo = topology_reason(req, n_fitting, by_domain)
        if topo is not None:
            counts["topology"].removed_hosts = n_fitting
            counts["topology"].note(topo)
            n_fitting = 0
    return Funnel(len(hosts), index.n_devices, list(counts.values()), n_fitting, nearest)
