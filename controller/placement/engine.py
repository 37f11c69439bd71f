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
from typing import Any

from controller.placement.catalog import OfferCount, OfferGroup, catalog
from controller.placement.claims import apply_allocation, unapply_allocation
from controller.placement.decision import (
    Allocation,
    Claim,
    ClaimConflict,
    Decision,
    HostPlan,
    MigDestroy,
    PlacementError,
    Refusal,
    UnknownClaim,
)
from controller.placement.filters import Demand, QuotaCheck, host_passes, resolve
from controller.placement.funnel import Funnel, explain, explain_exhaustive
from controller.placement.host_plan import plan_host
from controller.placement.index import Bucket, Index
from controller.placement.model import DeviceAdmin, DeviceHealth, Host, HostState, OfferKey, Validation
from controller.placement.request import PlacementRequest, parse_request
from controller.placement.topology import DOMAIN_ATTR, topology_reason
from controller.placement.weighers import WeigherConfig, topology_score, weigh


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

    def catalog(self) -> dict[OfferGroup, OfferCount]:
        """Free units by backend, region, kind, model and profile (``controller.placement.catalog``)."""
        with self._lock:
            return catalog(self.index)

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

    def _domain_hosts(self, demand: Demand, attr: str, value: str, min_units: int) -> Iterator[str]:
        for key in demand.keys:
            b = self.index.bucket(key, attr, value)
            if b is not None:
                yield from b.iter_hosts(min_units, False)

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
            """The host's free units (summed over each demand's offer keys) bound what ``plan_host`` can take."""
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

        min_units = primary.min_units()

        def large_domains() -> dict[str, int]:
            """Domains not yet visited whose buckets hold req.nodes hosts with free units of the primary demand,
            with that count (O(domains))."""
            per_domain: dict[str, int] = {}
            for key in primary.keys:
                for value, db in self.index.domains.get((key, attr), {}).items():
                    if value not in visited:
                        per_domain[value] = per_domain.get(value, 0) + db.count(min_units)
            large = {v: n for v, n in per_domain.items() if n >= req.nodes}
            if req.regions or req.azs:
                # A domain lies in one AZ (a network node, a placement group) or is one: its first host tells.
                for value in list(large):
                    first = next(iter(self._domain_hosts(primary, attr, value, min_units)), None)
                    h = self.index.hosts.get(first) if first is not None else None
                    if h is None or (req.regions and h.region not in req.regions) or (req.azs and h.az not in req.azs):
                        del large[value]
            return large

        def n_domains() -> int:
            return max(len(self.index.domains.get((key, attr), {})) for key in primary.keys)

        def room_in(dom: str) -> int:
            """Hosts of the domain with free units of the primary demand: a bound on its candidates."""
            n = 0
            for k2 in primary.keys:
                b = self.index.bucket(k2, attr, dom)
                if b is not None:
                    n += b.count(min_units)
            return n

        def gather(dom: str) -> None:
            """Plan the domain's hosts until it holds the gang (plus a few to weigh); keep it if it does."""
            visited.add(dom)
            members: list[HostPlan] = []
            spare = 0
            for k2 in primary.keys:
                b = self.index.bucket(k2, attr, dom)
                if b is None:
                    continue
                spare += b.count(min_units)
                for hid2 in b.iter_hosts(min_units, spread):
                    p2 = plan(hid2)
                    if p2 is not None and all(m.host.id != hid2 for m in members):
                        members.append(p2)
                        if len(members) >= req.nodes + extra:
                            break
                if len(members) >= req.nodes + extra:
                    break
            if len(members) >= req.nodes:
                groups.append((dom, members, spare - req.nodes))

        visited: set[str] = set()
        groups: list[tuple[str, list[HostPlan], int]] = []
        extra = max(2, self.candidates // 2)
        jumped = False
        for key in primary.keys:
            for hid in self._stream(req, primary, spread, key):
                host = self.index.hosts[hid]
                dom = host.domain(req.topology)
                if dom is None or dom in visited:
                    continue
                # Bucket counts bound the domain's candidates: skip it without planning a host if they are too
                # few (a gang no domain can hold is then refused in O(domains), not O(hosts)).
                if room_in(dom) < req.nodes:
                    visited.add(dom)
                    # Many domains too small and no gang yet: stop walking hosts; go straight to the domains
                    # whose buckets can hold the gang, tightest first (the topology weigher's preference), or
                    # refuse if there is none. A large gang on a busy fleet then costs O(domains), not O(hosts).
                    if not groups and len(visited) >= max(64, n_domains() // 16):
                        large = large_domains()
                        for value in sorted(large, key=lambda v: (large[v], v)):
                            gather(value)
                            if len(groups) >= self.max_domains:
                                break
                        jumped = True
                        break
                    continue
                if plan(hid) is None:
                    continue
                gather(dom)
                if len(groups) >= self.max_domains:
                    break
            if jumped or len(groups) >= self.max_domains:
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
        return plan_host(host, demands, policy, self.index.offers, self._hosts_offering)

    def _hosts_offering(self, key: OfferKey) -> int:
        b = self.index.bucket(key)
        return len(b) if b is not None else 0

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
            return topology_reason(req, len(hosts), lambda topology: Counter(h.domain(topology) for h in hosts))

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
        refusal = Refusal(req, tenant, detail, funnel, quota if blocked_by_quota else None)
        nf = funnel.nearest_fit
        if nf is not None and nf.satisfied >= 1.0 and nf.host_id in self.index.hosts:
            # Its GPUs could serve the request; only host filters (a backend that cannot hand it out, a state)
            # stand in the way. What it would take there, so a refusal also shows where the units are.
            plan = self._plan_host(self.index.hosts[nf.host_id], demands, policy)
            refusal.nearest_allocations = plan.allocations if plan is not None else []
        return refusal

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
                    apply_allocation(self.index.hosts, cid, a)
                    applied.append(a)
            except ClaimConflict:
                for a in reversed(applied):
                    unapply_allocation(self.index.hosts, cid, a)
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
                d = unapply_allocation(self.index.hosts, claim.id, a)
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
