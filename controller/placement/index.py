"""The in-memory index: hosts by offer key and free capacity, kept current in O(changed host).

For every offer key (see ``model.OfferKey``) a ``Bucket`` groups the hosts that have free capacity of that
key by how many units they have free. The same is kept per placement group, AZ and region, so a request
restricted to an AZ, or a gang that must share a placement group, walks only that domain. A decision walks
buckets lazily in pack (fewest free first) or spread order and stops once it has enough candidates, so it
does not scan 100,000 hosts for a common request.

For refusals (``filters.explain``) hosts are also grouped by what the filters read: a *coarse* group per
host-level signature (state, backend, region, AZ, validation, on-demand MIG, GPU shape) and, inside it, a
*fine* group per device signature (each GPU's mode, model, memory, health, admin state and free state).
A 100,000-host fleet has a few hundred coarse groups, so the funnel evaluates groups rather than hosts.
Each group also keeps its members in index order (a lazily cleaned heap of ``(seq, host)``) so the funnel's
examples and nearest fit are the first ones in host order, as an exhaustive walk would report them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from controller.placement.model import Device, Host, OfferKey, host_offers

# Gang domains; every value is qualified by the host's backend (a lease stays inside one backend), and
# ``backend`` itself is the domain of a gang with topology ``any``.
DOMAINS = (
    "placement_group",
    "az",
    "region",
    "backend",
    "network_node_3",
    "network_node_2",
    "network_node_1",
    "aggregate",
)
DomainValues = tuple[str | None, str, str, str, str | None, str | None, str | None, str | None]


def domain_values(host: Host) -> DomainValues:
    b = host.backend_id
    nodes = host.network_nodes
    n3, n2, n1 = (f"{b}/{nodes[i]}" if len(nodes) > i and nodes[i] else None for i in (2, 1, 0))
    group = f"{b}/{host.placement_group}" if host.placement_group else None
    aggregate = f"{b}/{host.aggregate}" if host.aggregate else None
    return (group, f"{b}/{host.az}", f"{b}/{host.region}", b, n3, n2, n1, aggregate)


class Bucket:
    """Hosts with free units of one offer key, grouped by the number of free units (an ordered set per level)."""

    __slots__ = ("_sorted", "levels")

    def __init__(self) -> None:
        self.levels: dict[int, dict[str, None]] = {}
        self._sorted: list[int] | None = None

    def add(self, host_id: str, units: int) -> None:
        level = self.levels.get(units)
        if level is None:
            level = self.levels[units] = {}
            self._sorted = None
        level[host_id] = None

    def remove(self, host_id: str, units: int) -> None:
        level = self.levels[units]
        del level[host_id]
        if not level:
            del self.levels[units]
            self._sorted = None

    def sorted_levels(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self.levels)
        return self._sorted

    def iter_hosts(self, min_units: int, spread: bool) -> Iterator[str]:
        """Hosts with at least ``min_units`` free: fewest free first (pack) or most free first (spread)."""
        levels = [u for u in self.sorted_levels() if u >= min_units]
        if spread:
            levels.reverse()
        for u in levels:
            level = self.levels.get(u)
            if level:
                yield from level

    def count(self, min_units: int = 1) -> int:
        n = 0
        for u, h in self.levels.items():
            if u >= min_units:
                n += len(h)
        return n

    def __len__(self) -> int:
        return self.count(1)


# What the filters and ``host_plan.plan_host`` read of a host (besides its devices, and its placement group,
# which only the topology check reads): state, backend, region, AZ, validation, on-demand MIG, (mode, model)
# shared by all its GPUs (None if mixed), the number of GPUs and when its capacity ends.
CoarseKey = tuple[str, str, str, str, str, str, bool, tuple[str, str] | None, int, object]
# One signature per GPU, in device order.
FineKey = tuple[tuple[object, ...], ...]


def coarse_key(host: Host) -> CoarseKey:
    shape: tuple[str, str] | None = None
    if host.devices:
        d0 = host.devices[0]
        shape = (d0.mode, d0.model)
        for d in host.devices:
            if d.mode != shape[0] or d.model != shape[1]:
                shape = None
                break
    return (
        host.state,
        host.backend_id,
        host.backend_kind,
        host.region,
        host.az,
        host.validation,
        host.on_demand_mig,
        shape,
        len(host.devices),
        host.usable_until,
    )


def device_signature(host: Host, d: Device) -> tuple[object, ...]:
    """Everything the device filters, ``device_free_units`` and ``host_plan.plan_host`` read of a GPU.

    The free state is reduced to what decides whether (not where) something fits: free whole GPU, free
    replicas, offered vGPU types and the type/instances in use, and for MIG the layout (claimed or not: it
    decides what can be created), the profiles of free instances and whether the pool allows on-demand MIG.
    """
    mode = d.mode
    state: object
    if mode == "whole":
        state = d.claimed_by is None
    elif mode == "mig":
        free = sorted(m.profile for m in d.mig_instances if m.claimed_by is None and not m.pending)
        state = (host.on_demand_mig, d.mig_layout(), tuple(free))
    elif mode in ("timeslice", "mps"):
        state = d.share_free()
    elif mode == "vgpu":
        state = (
            tuple((t, v.framebuffer_mib, v.max_instances, v.mig_profile) for t, v in d.vgpu_types.items()),
            d.vgpu_in_use(),
            # MIG-backed: the free GPU instances' profiles and the vGPUs of each type on the others.
            tuple(sorted(m.profile for m in d.mig_instances if m.claimed_by is None and not m.pending)),
            tuple(sorted(m.vgpu_type or "" for m in d.mig_instances if m.claimed_by is not None)),
        )
    else:
        state = None
    return (d.index, mode, d.model, d.memory_mib, d.health, d.admin_state, state)


class Group:
    """Hosts sharing a signature, with their index order (``seq``) kept in a lazily cleaned min-heap."""

    __slots__ = ("by_domain", "heap", "members")

    def __init__(self, domains: bool = False) -> None:
        self.members: dict[str, int] = {}  # host id -> seq
        self.heap: list[tuple[int, str]] = []
        # Fine groups: members per placement group / AZ / region / backend value (for gang refusals).
        self.by_domain: tuple[dict[str | None, int], ...] | None = tuple({} for _ in DOMAINS) if domains else None

    def __len__(self) -> int:
        return len(self.members)

    def add(self, host_id: str, seq: int, doms: DomainValues | None = None) -> None:
        self.members[host_id] = seq
        if len(self.heap) > 2 * len(self.members) + 16:
            self.heap = [(q, h) for h, q in self.members.items()]
            heapq.heapify(self.heap)
        else:
            heapq.heappush(self.heap, (seq, host_id))
        if self.by_domain is not None and doms is not None:
            for c, v in zip(self.by_domain, doms, strict=True):
                c[v] = c.get(v, 0) + 1

    def remove(self, host_id: str, doms: DomainValues | None = None) -> None:
        del self.members[host_id]
        if self.by_domain is not None and doms is not None:
            for c, v in zip(self.by_domain, doms, strict=True):
                n = c[v] - 1
                if n:
                    c[v] = n
                else:
                    del c[v]

    def domain_counts(self, attr: str) -> dict[str | None, int]:
        """Members per value of ``attr`` (one of ``DOMAINS``); fine groups only."""
        assert self.by_domain is not None
        return self.by_domain[DOMAINS.index(attr)]

    def any(self) -> str:
        return next(iter(self.members))

    def _valid(self, entry: tuple[int, str]) -> bool:
        return self.members.get(entry[1]) == entry[0]

    def first_seq(self) -> int:
        """The smallest seq among the members (the group must not be empty)."""
        heap = self.heap
        while not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0]

    def first(self, k: int) -> list[tuple[int, str]]:
        """The ``k`` first members in index order, as ``(seq, host id)``."""
        heap = self.heap
        out: list[tuple[int, str]] = []
        while heap and len(out) < k:
            e = heapq.heappop(heap)
            if self._valid(e) and (not out or out[-1] != e):
                out.append(e)
        for e in out:
            heapq.heappush(heap, e)
        return out


class Index:
    """Hosts, their devices and free capacity. Not thread-safe: ``Engine`` serialises access."""

    def __init__(self, hosts: Iterable[Host] = ()) -> None:
        self.hosts: dict[str, Host] = {}
        self.offers: dict[str, dict[OfferKey, int]] = {}
        self.buckets: dict[OfferKey, Bucket] = {}
        self.domain_buckets: dict[tuple[OfferKey, str, str], Bucket] = {}
        # The same buckets by (key, domain kind): value -> bucket, so a gang can rule out domains without hosts.
        self.domains: dict[tuple[OfferKey, str], dict[str, Bucket]] = {}
        self.keys_by_kind: dict[str, set[OfferKey]] = {}
        # Memory per model and per (model, vGPU type), so the memory filter can drop whole buckets.
        self.model_memory: dict[str, int] = {}
        self.vgpu_memory: dict[tuple[str, str], int] = {}
        self.version: dict[str, int] = {}
        # Signature groups for the refusal funnel (see the module docstring). ``seq`` numbers hosts in the
        # order of ``hosts`` (insertion order; a host keeps its place when it is replaced).
        self.seq: dict[str, int] = {}
        self._next_seq = 0
        # host -> (coarse key, fine key, (placement group, AZ, region))
        self.group_of: dict[str, tuple[CoarseKey, FineKey, DomainValues]] = {}
        self.coarse: dict[CoarseKey, Group] = {}
        self.fine: dict[CoarseKey, dict[FineKey, Group]] = {}
        self.n_devices = 0
        self._dev_sigs: dict[tuple[object, ...], tuple[object, ...]] = {}
        for h in hosts:
            self.upsert(h)

    # --- maintenance (O(one host)) ---------------------------------------------------------------------

    def upsert(self, host: Host) -> None:
        """Add or replace a host (inventory update, state change, or a claim applied to it)."""
        old = self.hosts.get(host.id)
        if old is not None:
            self._unindex(old)
        else:
            self.seq[host.id] = self._next_seq
            self._next_seq += 1
        self.hosts[host.id] = host
        self._index(host)
        self._classify(host)
        self.version[host.id] = self.version.get(host.id, 0) + 1

    def remove(self, host_id: str) -> Host | None:
        host = self.hosts.pop(host_id, None)
        if host is not None:
            self._unindex(host)
            self._unclassify(host_id)
            self.version.pop(host_id, None)
            self.seq.pop(host_id, None)
        return host

    def refresh(self, host_id: str) -> None:
        """Re-count a host after its devices were changed in place (claims, health, drain)."""
        host = self.hosts[host_id]
        old = self.offers.get(host_id, {})
        new = host_offers(host)
        if new != old:
            for k, n in old.items():
                if new.get(k) != n:
                    self._bucket_remove(host, k, n)
            for k, n in new.items():
                if old.get(k) != n:
                    self._bucket_add(host, k, n)
            self.offers[host_id] = new
        self._classify(host)
        self.version[host_id] = self.version.get(host_id, 0) + 1

    def _index(self, host: Host) -> None:
        for d in host.devices:
            if d.memory_mib > self.model_memory.get(d.model, 0):
                self.model_memory[d.model] = d.memory_mib
            for t, v in d.vgpu_types.items():
                self.vgpu_memory[(d.model, t)] = v.framebuffer_mib
        offers = host_offers(host)
        self.offers[host.id] = offers
        for k, n in offers.items():
            self._bucket_add(host, k, n)

    def _unindex(self, host: Host) -> None:
        for k, n in self.offers.pop(host.id, {}).items():
            self._bucket_remove(host, k, n)

    def _classify(self, host: Host) -> None:
        """Put the host in the coarse and fine groups of its current signature (moving it if it changed)."""
        ck = coarse_key(host)
        sigs = self._dev_sigs
        fine: list[tuple[object, ...]] = []
        for d in host.devices:
            if d.mode == "whole":  # the common case, inlined: the index is built and refreshed through here
                sig: tuple[object, ...] = (
                    d.index,
                    "whole",
                    d.model,
                    d.memory_mib,
                    d.health,
                    d.admin_state,
                    d.claimed_by is None,
                )
            else:
                sig = device_signature(host, d)
            fine.append(sigs.setdefault(sig, sig))
        fk = tuple(fine)
        doms = domain_values(host)
        cur = self.group_of.get(host.id)
        if cur is not None:
            if cur[0] == ck and cur[1] == fk and cur[2] == doms:
                return
            self._unclassify(host.id)
        seq = self.seq[host.id]
        self.group_of[host.id] = (ck, fk, doms)
        cg = self.coarse.get(ck)
        if cg is None:
            cg = self.coarse[ck] = Group()
            self.fine[ck] = {}
        cg.add(host.id, seq)
        fines = self.fine[ck]
        fg = fines.get(fk)
        if fg is None:
            fg = fines[fk] = Group(domains=True)
        fg.add(host.id, seq, doms)
        self.n_devices += len(host.devices)

    def _unclassify(self, host_id: str) -> None:
        cur = self.group_of.pop(host_id, None)
        if cur is None:
            return
        ck, fk, doms = cur
        cg = self.coarse[ck]
        cg.remove(host_id)
        fines = self.fine[ck]
        fines[fk].remove(host_id, doms)
        if not fines[fk]:
            del fines[fk]
        if not cg:
            del self.coarse[ck]
            del self.fine[ck]
        self.n_devices -= ck[8]

    def _domain_values(self, host: Host) -> Iterator[tuple[str, str]]:
        for attr, value in zip(DOMAINS, domain_values(host), strict=True):
            if value is not None:
                yield attr, value

    def _bucket_add(self, host: Host, key: OfferKey, units: int) -> None:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket()
            self.keys_by_kind.setdefault(key[0], set()).add(key)
        b.add(host.id, units)
        for dom, val in self._domain_values(host):
            dk = (key, dom, val)
            db = self.domain_buckets.get(dk)
            if db is None:
                db = self.domain_buckets[dk] = Bucket()
                self.domains.setdefault((key, dom), {})[val] = db
            db.add(host.id, units)

    def _bucket_remove(self, host: Host, key: OfferKey, units: int) -> None:
        self.buckets[key].remove(host.id, units)
        for dom, val in self._domain_values(host):
            self.domain_buckets[(key, dom, val)].remove(host.id, units)

    # --- queries ---------------------------------------------------------------------------------------

    def domains_of(self, host_id: str) -> DomainValues:
        """(placement group, AZ, region, backend) of a host, as grouped (qualified by the backend)."""
        return self.group_of[host_id][2]

    def bucket(self, key: OfferKey, domain: str | None = None, value: str | None = None) -> Bucket | None:
        if domain is None:
            return self.buckets.get(key)
        return self.domain_buckets.get((key, domain, value or ""))

    def buckets_in(self, key: OfferKey, attr: str, value: str) -> list[Bucket]:
        """The buckets of hosts whose ``attr`` (``az``, ``region``) is ``value``, one per backend that has it
        (domain values are qualified by the backend: ``<backend>/<value>``)."""
        return [b for v, b in self.domains.get((key, attr), {}).items() if v.partition("/")[2] == value]

    def keys(self, kind: str) -> set[OfferKey]:
        return self.keys_by_kind.get(kind, set())

    def free(self, host_id: str, key: OfferKey) -> int:
        return self.offers.get(host_id, {}).get(key, 0)

    def totals(self) -> dict[OfferKey, int]:
        """Free units per offer key over the whole fleet (for metrics and invariant checks)."""
        out: dict[OfferKey, int] = {}
        for offers in self.offers.values():
            for k, n in offers.items():
                out[k] = out.get(k, 0) + n
        return out
