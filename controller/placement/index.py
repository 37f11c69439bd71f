"""The in-memory index: hosts by offer key and free capacity, kept current in O(changed host).

For every offer key (see ``model.OfferKey``) a ``Bucket`` groups the hosts that have free capacity of that
key by how many units they have free. The same is kept per placement group, AZ and region, so a request
restricted to an AZ, or a gang that must share a placement group, walks only that domain. A decision walks
buckets lazily in pack (fewest free first) or spread order and stops once it has enough candidates, so it
does not scan 100,000 hosts for a common request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from controller.placement.model import Host, OfferKey, host_offers

DOMAINS = ("placement_group", "az", "region")


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
        return sum(len(h) for u, h in self.levels.items() if u >= min_units)

    def __len__(self) -> int:
        return self.count(1)


class Index:
    """Hosts, their devices and free capacity. Not thread-safe: ``Engine`` serialises access."""

    def __init__(self, hosts: Iterable[Host] = ()) -> None:
        self.hosts: dict[str, Host] = {}
        self.offers: dict[str, dict[OfferKey, int]] = {}
        self.buckets: dict[OfferKey, Bucket] = {}
        self.domain_buckets: dict[tuple[OfferKey, str, str], Bucket] = {}
        self.keys_by_kind: dict[str, set[OfferKey]] = {}
        # Memory per model and per (model, vGPU type), so the memory filter can drop whole buckets.
        self.model_memory: dict[str, int] = {}
        self.vgpu_memory: dict[tuple[str, str], int] = {}
        self.version: dict[str, int] = {}
        for h in hosts:
            self.upsert(h)

    # --- maintenance (O(one host)) ---------------------------------------------------------------------

    def upsert(self, host: Host) -> None:
        """Add or replace a host (inventory update, state change, or a claim applied to it)."""
        old = self.hosts.get(host.id)
        if old is not None:
            self._unindex(old)
        self.hosts[host.id] = host
        self._index(host)
        self.version[host.id] = self.version.get(host.id, 0) + 1

    def remove(self, host_id: str) -> Host | None:
        host = self.hosts.pop(host_id, None)
        if host is not None:
            self._unindex(host)
            self.version.pop(host_id, None)
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

    def _domain_values(self, host: Host) -> Iterator[tuple[str, str]]:
        if host.placement_group:
            yield "placement_group", host.placement_group
        yield "az", host.az
        yield "region", host.region

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
            db.add(host.id, units)

    def _bucket_remove(self, host: Host, key: OfferKey, units: int) -> None:
        self.buckets[key].remove(host.id, units)
        for dom, val in self._domain_values(host):
            self.domain_buckets[(key, dom, val)].remove(host.id, units)

    # --- queries ---------------------------------------------------------------------------------------

    def bucket(self, key: OfferKey, domain: str | None = None, value: str | None = None) -> Bucket | None:
        if domain is None:
            return self.buckets.get(key)
        return self.domain_buckets.get((key, domain, value or ""))

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
