"""What the fleet can hand out now, by backend and region: the tenant catalog (``GET /v1/offers``).

Read from the index's free capacity per host (``Index.offers``), so it counts exactly what placement would: ready
hosts, usable GPUs, live claims applied, and only the slice kinds each host's backend can hand out. Entries carry
counts, never host names or GPU ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.placement.index import Index

# Offer-key kinds as the catalog names them: "mig+" (instances that could be created on demand) is a MIG offer.
_KIND = {"gpu": "gpu", "mig": "mig", "mig+": "mig", "timeslice": "timeslice", "mps": "mps", "vgpu": "vgpu"}


@dataclass(frozen=True, slots=True, order=True)
class OfferGroup:
    backend: str
    backend_kind: str
    region: str
    kind: str
    model: str
    profile: str | None
    vgpu_type: str | None
    on_demand: bool  # MIG instances the controller would have an agent create (not yet existing)
    whole_node: bool  # the backend leases hosts whole (Ironic): a request takes every GPU of a host


@dataclass(slots=True)
class OfferCount:
    free: int = 0  # units free now over every host of the group
    hosts: int = 0  # hosts with at least one free unit
    max_per_host: int = 0  # the most one host offers (a same-host request larger than this cannot fit)


def catalog(index: Index) -> dict[OfferGroup, OfferCount]:
    """Free units per offer group over the whole index (O(hosts x offer keys); hosts offering nothing cost one
    lookup)."""
    out: dict[OfferGroup, OfferCount] = {}
    for host_id, offers in index.offers.items():
        if not offers:
            continue
        host = index.hosts[host_id]
        for (key_kind, model, variant), units in offers.items():
            kind = _KIND.get(key_kind)
            if kind is None or units <= 0:
                continue
            if host.slice_kinds is not None and kind not in host.slice_kinds:
                continue
            group = OfferGroup(
                backend=host.backend_id,
                backend_kind=host.backend_kind,
                region=host.region,
                kind=kind,
                model=model,
                profile=variant if kind == "mig" else None,
                vgpu_type=variant if kind == "vgpu" else None,
                on_demand=key_kind == "mig+",
                whole_node=host.whole_node,
            )
            count = out.setdefault(group, OfferCount())
            count.free += units
            count.hosts += 1
            count.max_per_host = max(count.max_per_host, units)
    return out
