"""The placement engine: decide where a request goes, claim it in the index, release it.

``Engine.decide`` is pure (it never changes the index). ``Engine.claim`` applies a decision to the index
all-or-nothing and returns the exact rows the store must claim atomically (``Claim.allocations``); if the
store's conditional update fails, the caller releases the claim here and decides again. ``Engine.release``
returns the MIG instances that were created on demand and must now be destroyed by the host's agent.

Thread-safety: every public method takes the engine's lock; one engine per controller process, fed by
the store (``upsert_host`` on every inventory or state write).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.placement import mig
from controller.placement.filters import (
    DOMAIN_ATTR,
    Demand,
    Funnel,
    QuotaCheck,
    explain,
    explain_exhaustive,
    host_passes,
    memory_ok,
    model_matches,
    resolve,
    topology_reason,
)
from controller.placement.index import Bucket, Index
from controller.placement.model import (
    DeviceAdmin,
    DeviceHealth,
    Host,
    HostState,
    MigSlot,
    OfferKey,
    SliceKind,
    Validation,
)
from controller.placement.request import PlacementRequest, parse_request
from controller.placement.weighers import WeigherConfig, topology_score, weigh

_KIND_MODE = {"gpu": "whole", "mig": "mig", "timeslice": "timeslice", "mps": "mps", "vgpu": "vgpu"}


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

    @property
    def status(self) -> int:
        return 403 if self.quota else 409

    @property
    def slug(self) -> str:
        return "quota-exceeded" if self.quota else "no-capacity"

    def extensions(self) -> dict[str, Any]:
        f = self.funnel
        out: dict[str, Any] = {
            "request": self.request.describe(),
            "candidates": {"hosts": f.hosts, "devices": f.devices},
            "filters": [
                {
                    "filter": c.name,
                    "removed_hosts": c.removed_hosts,
                    "removed_devices": c.removed_devices,
                    "examples": c.examples,
                }
                for c in f.filters
                if c.removed_hosts or c.removed_devices
            ],
            "nearest_fit": None,
        }
        if self.quota:
            out["quota"] = self.quota
        if f.nearest_fit is not None:
            nf = f.nearest_fit
            out["nearest_fit"] = {
                "host": nf.host_id,
                "satisfied": nf.satisfied,
                "available": nf.have,
                "missing": nf.missing,
            }
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


class Engine:
    """In-memory placement over an ``Index``. See the module docstring for the contract with the store."""

    def __init__(
        self,
        hosts: Iterable[Host] = (),
        *,
        quota: QuotaCheck | None = None,
        weighers: WeigherConfig | None = None,
        candidates: int = 8,
        max_domains: int = 4,
    ) -> None:
        self.index = Index(hosts)
        self.quota = quota
        self.weighers = weighers or WeigherConfig()
        self.candidates = candidates
        self.max_domains = max_domains
        self.claims: dict[str, Claim] = {}
        self._lock = threading.RLock()

    # --- keeping the index current (called by the store layer on every write) ----------------------------

    def upsert_host(self, host: Host) -> None:
        """Add or replace a host with everything on it, including which claims hold what."""
        with self._lock:
            self.index.upsert(host)

    def remove_host(self, host_id: str) -> None:
        with self._lock:
            self.index.remove(host_id)

    def set_host_state(
        self, host_id: str, state: HostState | None = None, validation: Validation | None = None
    ) -> None:
        with self._lock:
            host = self.index.hosts[host_id]
            if state is not None:
                host.state = state
            if validation is not None:
                host.validation = validation
            self.index.refresh(host_id)

    def set_device_state(
        self, host_id: str, device_uuid: str, *, health: DeviceHealth | None = None, admin: DeviceAdmin | None = None
    ) -> None:
        with self._lock:
            d = self.index.hosts[host_id].device(device_uuid)
            if d is None:
                raise KeyError(device_uuid)
            if health is not None:
                d.health = health
            if admin is not None:
                d.admin_state = admin
            self.index.refresh(host_id)

    # --- deciding --------------------------------------------------------------------------------------

    def decide(
        self,
        request: PlacementRequest | dict[str, Any],
        tenant: str,
        *,
        dry_run: bool = False,
        explain: bool = False,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision | Refusal:
        """Where ``request`` would go for ``tenant`` (no change to the index), or why it cannot go anywhere.

        ``explain`` also runs the filter funnel on success (for the dry-run API; O(signature groups), see filters).
        ``exclude`` names hosts not to use (a backend already failed to provision the request there).
        """
        req = parse_request(request)
        with self._lock:
            policy = req.policy or self.weighers.default_policy
            demands = resolve(req, self.index, tenant, self.quota)
            chosen: tuple[list[HostPlan], str | None] | None = None
            if all(d.keys for d in demands):
                chosen = self._search(req, demands, policy, exclude)
            if chosen is None:
                refusal = self._refuse(req, tenant, demands, policy)
                if exclude:
                    refusal.detail += f"; {len(exclude)} host(s) already tried: {', '.join(sorted(exclude))}"
                return refusal
            nodes, domain = chosen
            decision = Decision(
                req, tenant, policy, nodes, dry_run, {n.host.id: self.index.version[n.host.id] for n in nodes}, domain
            )
            if explain:
                decision.funnel = self._funnel(req, demands, policy)
            return decision

    def _stream(self, req: PlacementRequest, demand: Demand, spread: bool, key: OfferKey) -> Iterator[str]:
        min_units = demand.min_units()
        buckets: list[Bucket | None]
        if req.azs:
            buckets = [b for a in req.azs for b in self.index.buckets_in(key, "az", a)]
        elif req.regions:
            buckets = [b for r in req.regions for b in self.index.buckets_in(key, "region", r)]
        else:
            buckets = [self.index.bucket(key)]
        for b in buckets:
            if b is not None:
                yield from b.iter_hosts(min_units, spread)

    def _primary(self, req: PlacementRequest, demands: list[Demand]) -> Demand:
        """The most selective demand: the one whose buckets hold the fewest hosts."""

        def size(d: Demand) -> int:
            total = 0
            for k in d.keys:
                b = self.index.bucket(k)
                total += b.count(d.min_units()) if b else 0
            return total

        return min(demands, key=size)

    def _search(
        self, req: PlacementRequest, demands: list[Demand], policy: str, exclude: frozenset[str] = frozenset()
    ) -> tuple[list[HostPlan], str | None] | None:
        primary = self._primary(req, demands)
        spread = policy == "spread"
        plans: dict[str, HostPlan | None] = {}

        offers = self.index.offers
        need = [(d.keys, d.count) for d in demands]

        def room(hid: str) -> bool:
            """The host's free units (summed over each demand's offer keys) bound what ``_plan_host`` can take."""
            o = offers.get(hid)
            return o is not None and all(sum(o.get(k, 0) for k in keys) >= count for keys, count in need)

        def plan(hid: str) -> HostPlan | None:
            if hid in plans:
                return plans[hid]
            host = self.index.hosts[hid]
            ok = hid not in exclude and room(hid) and host_passes(host, req)
            p = self._plan_host(host, demands, policy) if ok else None
            plans[hid] = p
            return p

        if req.nodes == 1:
            want = self.candidates + req.nodes - 1
            found: list[HostPlan] = []
            for key in primary.keys:
                got = 0
                for hid in self._stream(req, primary, spread, key):
                    if hid in plans:
                        continue
                    p = plan(hid)
                    if p is not None:
                        found.append(p)
                        got += 1
                        if got >= want:
                            break
                if len(found) >= 4 * want:
                    break
            if len(found) < req.nodes:
                return None
            ranked = self._rank(found, req, policy)
            return ranked[: req.nodes], None

        attr = DOMAIN_ATTR[req.topology]

        def some_domain_large_enough() -> bool:
            """Whether any domain has req.nodes hosts with free units of the primary demand (O(domains))."""
            min_units = primary.min_units()
            per_domain: dict[str, int] = {}
            for key in primary.keys:
                for value, db in self.index.domains.get((key, attr), {}).items():
                    n = per_domain[value] = per_domain.get(value, 0) + db.count(min_units)
                    if n >= req.nodes:
                        return True
            return False

        def n_domains() -> int:
            return max(len(self.index.domains.get((key, attr), {})) for key in primary.keys)

        visited: set[str] = set()
        bounded = False
        groups: list[tuple[str, list[HostPlan], int]] = []
        extra = max(2, self.candidates // 2)
        for key in primary.keys:
            for hid in self._stream(req, primary, spread, key):
                host = self.index.hosts[hid]
                dom = host.domain(req.topology)
                if dom is None or dom in visited:
                    continue
                # Bucket counts bound the domain's candidates: skip it without planning a host if they are too
                # few (a gang no domain can hold is then refused in O(domains), not O(hosts)).
                in_domain = 0
                for k2 in primary.keys:
                    b = self.index.bucket(k2, attr, dom)
                    if b is not None:
                        in_domain += b.count(primary.min_units())
                if in_domain < req.nodes:
                    visited.add(dom)
                    # Many domains too small and no gang yet: if none is large enough, stop walking hosts.
                    if not bounded and not groups and len(visited) >= max(64, n_domains() // 16):
                        bounded = True
                        if not some_domain_large_enough():
                            return None
                    continue
                if plan(hid) is None:
                    continue
                visited.add(dom)
                members: list[HostPlan] = []
                spare = 0
                for k2 in primary.keys:
                    b = self.index.bucket(k2, attr, dom)
                    if b is None:
                        continue
                    spare += b.count(primary.min_units())
                    for hid2 in b.iter_hosts(primary.min_units(), spread):
                        p2 = plan(hid2)
                        if p2 is not None and all(m.host.id != hid2 for m in members):
                            members.append(p2)
                            if len(members) >= req.nodes + extra:
                                break
                    if len(members) >= req.nodes + extra:
                        break
                if len(members) >= req.nodes:
                    groups.append((dom, members, spare - req.nodes))
                    if len(groups) >= self.max_domains:
                        break
            if len(groups) >= self.max_domains:
                break
        if not groups:
            return None
        best: tuple[float, list[HostPlan], str] | None = None
        topo_scores = [topology_score(g[2]) for g in groups]
        lo, hi = min(topo_scores), max(topo_scores)
        for (dom, members, _spare), ts in zip(groups, topo_scores, strict=True):
            ranked = self._rank(members, req, policy)[: req.nodes]
            score = sum(m.scores["total"] for m in ranked) / req.nodes
            score += self.weighers.topology * (0.0 if hi == lo else (ts - lo) / (hi - lo))
            if best is None or score > best[0]:
                best = (score, ranked, dom)
        assert best is not None
        ranked, dom = best[1], best[2]
        if req.topology == "any":
            return ranked, None  # the domain was the backend: nothing more to tell
        prefix = ranked[0].host.backend_id + "/"
        return ranked, dom[len(prefix) :] if dom.startswith(prefix) else dom

    def _rank(self, plans: list[HostPlan], req: PlacementRequest, policy: str) -> list[HostPlan]:
        scores = weigh(plans, req, self.weighers, policy)
        for p, s in zip(plans, scores, strict=True):
            p.scores = s
        return sorted(plans, key=lambda p: -p.scores["total"])

    def _plan_host(self, host: Host, demands: list[Demand], policy: str) -> HostPlan | None:
        """Pick devices on one host for every demand (or None). Devices taken by one demand are not reused."""
        taken_whole: set[str] = set()
        share_used: dict[str, int] = {}
        vgpu_used: dict[str, tuple[str, int]] = {}
        mig_taken: set[tuple[str, int]] = set()
        layouts: dict[str, mig.Layout] = {}
        allocs: list[Allocation] = []
        mig_loss = 0
        spread = policy == "spread"
        for dm in demands:
            s = dm.slice
            mode = _KIND_MODE[s.kind]
            devices = [d for d in host.devices if d.mode == mode and d.usable and model_matches(s.model, d.model)]
            devices = [d for d in devices if d.model not in dm.quota_blocked]
            need = s.count
            if s.kind == "gpu":
                free = [
                    d
                    for d in devices
                    if d.claimed_by is None and d.uuid not in taken_whole and _memory_fits(d.memory_mib, s)
                ]
                if len(free) < need:
                    return None
                for d in free[:need]:
                    taken_whole.add(d.uuid)
                    allocs.append(Allocation(host.id, d.uuid, "gpu", d.model, 1, dm.index))
            elif s.kind in ("timeslice", "mps"):
                frees = [
                    (d.share_free() - share_used.get(d.uuid, 0), d) for d in devices if _memory_fits(d.memory_mib, s)
                ]
                frees = [(f, d) for f, d in frees if f > 0]
                if sum(f for f, _ in frees) < need:
                    return None
                # One GPU that holds all replicas if there is one (best fit for pack, most free for spread).
                single = [(f, d) for f, d in frees if f >= need]
                order = (
                    sorted(single, key=lambda x: (-x[0] if spread else x[0], x[1].index))
                    if single
                    else sorted(frees, key=lambda x: (-x[0], x[1].index))
                )
                for f, d in order:
                    n = min(f, need)
                    share_used[d.uuid] = share_used.get(d.uuid, 0) + n
                    allocs.append(Allocation(host.id, d.uuid, s.kind, d.model, n, dm.index))  # type: ignore[arg-type]
                    need -= n
                    if need == 0:
                        break
            elif s.kind == "vgpu":
                for d in devices:
                    if need == 0:
                        break
                    for t in dm.variants.get(d.model, []):
                        cur = vgpu_used.get(d.uuid)
                        if cur is not None and cur[0] != t:
                            continue
                        f = d.vgpu_free(t) - (cur[1] if cur else 0)
                        if f <= 0:
                            continue
                        n = min(f, need)
                        vgpu_used[d.uuid] = (t, (cur[1] if cur else 0) + n)
                        allocs.append(Allocation(host.id, d.uuid, "vgpu", d.model, n, dm.index, vgpu_type=t))
                        need -= n
                        break
                if need:
                    return None
            else:
                for _ in range(need):
                    a, loss = self._pick_mig(host, devices, dm, mig_taken, layouts)
                    if a is None:
                        return None
                    allocs.append(a)
                    mig_loss += loss
        used = sum(a.units for a in allocs)
        offers = self.index.offers.get(host.id, {})
        capacity = sum(offers.get(k, 0) for dm in demands for k in dm.keys)
        return HostPlan(host, allocs, max(0, capacity - used), max(capacity, used), mig_loss)

    def _pick_mig(
        self,
        host: Host,
        devices: list[Any],
        dm: Demand,
        mig_taken: set[tuple[str, int]],
        layouts: dict[str, mig.Layout],
    ) -> tuple[Allocation | None, int]:
        # 1. A free existing instance of an acceptable profile (smallest acceptable profile first).
        best_existing: tuple[int, int, int, Any, MigSlot] | None = None
        for d in devices:
            variants = dm.variants.get(d.model, [])
            for m in d.mig_instances:
                if (
                    m.claimed_by is None
                    and not m.pending
                    and m.profile in variants
                    and (d.uuid, m.start) not in mig_taken
                ):
                    busy = sum(1 for x in d.mig_instances if x.claimed_by is not None)
                    ex = (variants.index(m.profile), -busy, d.index, d, m)
                    if best_existing is None or ex[:3] < best_existing[:3]:
                        best_existing = ex
        if best_existing is not None:
            d, m = best_existing[3], best_existing[4]
            mig_taken.add((d.uuid, m.start))
            return (
                Allocation(host.id, d.uuid, "mig", d.model, 1, dm.index, m.profile, (m.start, m.size), m.uuid),
                0,
            )
        if not host.on_demand_mig:
            return None, 0
        # 2. Create one where it fragments least.
        best: tuple[int, int, int, int, Any, str, int] | None = None
        for d in devices:
            layout = layouts.get(d.uuid)
            if layout is None:
                layout = layouts[d.uuid] = d.mig_layout()
            for rank, p in enumerate(dm.variants.get(d.model, [])):
                bp = mig.best_placement(d.model, layout, p)
                if bp is None:
                    continue
                loss, start, size = bp
                cand = (rank, loss, d.index, start, d, p, size)
                if best is None or cand[:4] < best[:4]:
                    best = cand
        if best is None:
            return None, 0
        _, loss, _, start, d, p, size = best
        layouts[d.uuid] = mig.add(layouts[d.uuid], start, size, p)
        return Allocation(host.id, d.uuid, "mig", d.model, 1, dm.index, p, (start, size), None, True), loss

    # --- refusing --------------------------------------------------------------------------------------

    def _funnel(self, req: PlacementRequest, demands: list[Demand], policy: str) -> Funnel:
        """Why hosts cannot take the request, per filter, from the index's signature groups (not a host walk)."""

        def fits(h: Host) -> bool:
            return self._plan_host(h, demands, policy) is not None

        return explain(req, demands, self.index, fits)

    def _funnel_exhaustive(self, req: PlacementRequest, demands: list[Demand], policy: str) -> Funnel:
        """Every filter over every host: the reference ``_funnel`` must agree with (tests only; O(fleet))."""

        def fits(h: Host) -> bool:
            return self._plan_host(h, demands, policy) is not None

        def topology_ok(hosts: list[Host]) -> str | None:
            return topology_reason(req, len(hosts), lambda: Counter(h.domain(req.topology) for h in hosts))

        return explain_exhaustive(req, demands, self.index.hosts.values(), fits, topology_ok)

    def _refuse(self, req: PlacementRequest, tenant: str, demands: list[Demand], policy: str) -> Refusal:
        funnel = self._funnel(req, demands, policy)
        quota = next((q for d in demands for q in d.quota_blocked.values()), None)
        blocked_by_quota = quota is not None and any(not d.keys and d.quota_blocked for d in demands)
        removed = [f"{c.name}: {c.removed_hosts} hosts" for c in funnel.filters if c.removed_hosts]
        if blocked_by_quota:
            detail = f"{req.describe()} would exceed quota {quota}"
        else:
            detail = f"no placement for {req.describe()} among {funnel.hosts} hosts"
            if removed:
                detail += " (" + ", ".join(removed) + ")"
        return Refusal(req, tenant, detail, funnel, quota if blocked_by_quota else None)

    # --- claiming and releasing ------------------------------------------------------------------------

    def claim(self, decision: Decision, claim_id: str | None = None) -> Claim:
        """Apply a decision to the index, all or nothing. Raises ``ClaimConflict`` if anything was taken."""
        if decision.dry_run:
            raise PlacementError("a dry-run decision cannot be claimed")
        cid = claim_id or uuidlib.uuid4().hex
        with self._lock:
            if cid in self.claims:
                raise PlacementError(f"claim {cid} exists")
            applied: list[Allocation] = []
            try:
                for a in decision.allocations:
                    self._apply(cid, a)
                    applied.append(a)
            except ClaimConflict:
                for a in reversed(applied):
                    self._unapply(cid, a)
                for hid in {a.host_id for a in applied}:
                    self.index.refresh(hid)
                raise
            for hid in {a.host_id for a in decision.allocations}:
                self.index.refresh(hid)
            claim = Claim(cid, decision.tenant, decision.allocations, decision.actions)
            self.claims[cid] = claim
            return claim

    def release(self, claim: Claim | str) -> list[MigDestroy]:
        """Give everything a claim holds back to the index; returns MIG instances to destroy (on-demand ones)."""
        with self._lock:
            if isinstance(claim, str):
                found = self.claims.get(claim)
                if found is None:
                    raise UnknownClaim(claim)
                claim = found
            destroy: list[MigDestroy] = []
            for a in claim.allocations:
                d = self._unapply(claim.id, a)
                if d is not None:
                    destroy.append(d)
            for hid in claim.host_ids:
                if hid in self.index.hosts:
                    self.index.refresh(hid)
            self.claims.pop(claim.id, None)
            return destroy

    def adopt(self, claim: Claim) -> None:
        """Register a claim the store already holds (after a restart the hosts carry its markers)."""
        with self._lock:
            self.claims[claim.id] = claim

    def _device(self, a: Allocation) -> Any:
        host = self.index.hosts.get(a.host_id)
        d = host.device(a.device_uuid) if host else None
        if d is None:
            raise ClaimConflict(f"device {a.device_uuid} on {a.host_id} is gone")
        return d

    def _apply(self, cid: str, a: Allocation) -> None:
        d = self._device(a)
        host = self.index.hosts[a.host_id]
        if host.state != "ready" or not d.usable or d.mode != _KIND_MODE[a.kind]:
            raise ClaimConflict(f"{a.device_uuid} on {a.host_id} is no longer placeable")
        if a.kind == "gpu":
            if d.claimed_by is not None:
                raise ClaimConflict(f"GPU {a.device_uuid} is taken")
            d.claimed_by = cid
        elif a.kind in ("timeslice", "mps"):
            if d.share_free() < a.units:
                raise ClaimConflict(f"GPU {a.device_uuid} has {d.share_free()} free replicas")
            d.share_claims[cid] = d.share_claims.get(cid, 0) + a.units
        elif a.kind == "vgpu":
            assert a.vgpu_type is not None
            if d.vgpu_free(a.vgpu_type) < a.units:
                raise ClaimConflict(f"GPU {a.device_uuid} has no {a.units} free {a.vgpu_type}")
            _, n = d.vgpu_claims.get(cid, (a.vgpu_type, 0))
            d.vgpu_claims[cid] = (a.vgpu_type, n + a.units)
        else:
            assert a.profile is not None and a.placement is not None
            start, size = a.placement
            if a.create:
                if not host.on_demand_mig or (start, size) not in mig.free_placements(
                    d.model, d.mig_layout(), a.profile
                ):
                    raise ClaimConflict(f"MIG {a.profile} at {start} on {a.device_uuid} cannot be created")
                d.mig_instances.append(MigSlot(a.profile, start, size, None, cid, pending=True, ephemeral=True))
            else:
                m = _find_slot(d, a)
                if m is None or m.claimed_by is not None or m.pending:
                    raise ClaimConflict(f"MIG {a.profile} at {start} on {a.device_uuid} is taken")
                m.claimed_by = cid

    def _unapply(self, cid: str, a: Allocation) -> MigDestroy | None:
        host = self.index.hosts.get(a.host_id)
        d = host.device(a.device_uuid) if host else None
        if d is None:
            return None
        if a.kind == "gpu":
            if d.claimed_by == cid:
                d.claimed_by = None
        elif a.kind in ("timeslice", "mps"):
            d.share_claims.pop(cid, None)
        elif a.kind == "vgpu":
            d.vgpu_claims.pop(cid, None)
        else:
            m = _find_slot(d, a)
            if m is None or m.claimed_by != cid:
                return None
            if m.ephemeral:
                d.mig_instances.remove(m)
                assert a.placement is not None and a.profile is not None
                return MigDestroy(a.host_id, a.device_uuid, a.profile, a.placement[0], a.placement[1], m.uuid)
            m.claimed_by = None
        return None


def _find_slot(d: Any, a: Allocation) -> MigSlot | None:
    assert a.placement is not None
    for m in d.mig_instances:
        if (m.start, m.size, m.profile) == (a.placement[0], a.placement[1], a.profile):
            return m  # type: ignore[no-any-return]
    return None


def _memory_fits(memory_mib: int, s: Any) -> bool:
    return memory_ok(memory_mib, s.min_memory_mib)
