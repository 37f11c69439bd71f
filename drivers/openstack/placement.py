"""Placement, read only: resource providers (nested pGPU children included), inventories, usages, traits, and a
comparison with gpufabric's own view that reports mismatches (it never writes to Placement).

Raw ``GET``s through the SDK's placement adapter with an explicit microversion (1.39 by default, Placement 16's
maximum; 1.14 is enough for nested providers): openstacksdk 4.22 has no proxy call for provider traits or usages
that returns plain data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.openstack.connection import service
from drivers.openstack.errors import OpenStackCallFailed
from drivers.openstack.models import GpuFlavor
from drivers.openstack.nova import is_gpu_resource_class

DEFAULT_MICROVERSION = "1.39"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderInventory(_Model):
    total: int
    reserved: int = 0
    min_unit: int = 1
    max_unit: int
    step_size: int = 1
    allocation_ratio: float = 1.0

    @property
    def capacity(self) -> int:
        return math.floor((self.total - self.reserved) * self.allocation_ratio)


class ResourceProvider(_Model):
    uuid: str
    name: str
    generation: int = 0
    parent_uuid: str | None = None
    root_uuid: str
    inventories: dict[str, ProviderInventory] = Field(default_factory=dict)
    usages: dict[str, int] = Field(default_factory=dict)
    traits: list[str] = Field(default_factory=list)

    def free(self, rc: str) -> int:
        inv = self.inventories.get(rc)
        return 0 if inv is None else max(inv.capacity - self.usages.get(rc, 0), 0)


class ResourceUsage(_Model):
    capacity: int
    used: int


class PlacementView(_Model):
    providers: list[ResourceProvider]

    def by_uuid(self, uuid: str) -> ResourceProvider:
        return next(p for p in self.providers if p.uuid == uuid)

    def roots(self) -> list[ResourceProvider]:
        return [p for p in self.providers if p.parent_uuid is None]

    def tree(self, root_uuid: str) -> list[ResourceProvider]:
        return [p for p in self.providers if p.root_uuid == root_uuid]

    def children(self, uuid: str) -> list[ResourceProvider]:
        return [p for p in self.providers if p.parent_uuid == uuid]

    def host_gpu_usage(self, gpu_only: bool = True) -> dict[str, dict[str, ResourceUsage]]:
        """Per root provider name (the compute host / Ironic node): capacity and usage summed over its tree."""
        out: dict[str, dict[str, ResourceUsage]] = {}
        for root in self.roots():
            sums: dict[str, ResourceUsage] = {}
            for p in self.tree(root.uuid):
                for rc, inv in p.inventories.items():
                    if gpu_only and not is_gpu_resource_class(rc):
                        continue
                    prev = sums.get(rc, ResourceUsage(capacity=0, used=0))
                    sums[rc] = ResourceUsage(
                        capacity=prev.capacity + inv.capacity, used=prev.used + p.usages.get(rc, 0)
                    )
            out[root.name] = sums
        return out

    def host_traits(self) -> dict[str, set[str]]:
        return {root.name: {t for p in self.tree(root.uuid) for t in p.traits} for root in self.roots()}


class PlacementReader:
    """Reads Placement through ``conn.placement`` (an openstacksdk connection)."""

    def __init__(self, conn: Any, microversion: str = DEFAULT_MICROVERSION) -> None:
        self.placement = service(conn, "placement")
        self.microversion = microversion

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        import keystoneauth1.exceptions as ksexc
        import openstack.exceptions as osexc

        try:
            resp = self.placement.get(path, params=params, microversion=self.microversion, raise_exc=False)
        except osexc.SDKException as e:
            raise OpenStackCallFailed(f"GET {path}", str(e)) from e
        except ksexc.ClientException as e:  # keystoneauth: Keystone or Placement unreachable, auth refused
            raise OpenStackCallFailed(f"GET {path}", f"{type(e).__name__}: {e}") from e
        if resp.status_code != 200:
            raise OpenStackCallFailed(f"GET {path}", resp.text[:500], resp.status_code)
        body: dict[str, Any] = resp.json()
        return body

    def providers(self, in_tree: str | None = None) -> list[dict[str, Any]]:
        params = {"in_tree": in_tree} if in_tree else None
        return list(self._get("/resource_providers", params)["resource_providers"])

    def provider(self, raw: dict[str, Any]) -> ResourceProvider:
        uuid = raw["uuid"]
        inventories = self._get(f"/resource_providers/{uuid}/inventories")["inventories"]
        usages = self._get(f"/resource_providers/{uuid}/usages")["usages"]
        traits = self._get(f"/resource_providers/{uuid}/traits")["traits"]
        return ResourceProvider(
            uuid=uuid,
            name=raw["name"],
            generation=raw.get("generation", 0),
            parent_uuid=raw.get("parent_provider_uuid"),
            root_uuid=raw.get("root_provider_uuid") or uuid,
            inventories={rc: ProviderInventory(**inv) for rc, inv in inventories.items()},
            usages={rc: int(n) for rc, n in usages.items()},
            traits=sorted(traits),
        )

    def view(self, in_tree: str | None = None) -> PlacementView:
        """Every provider (or one tree) with inventories, usages and traits."""
        return PlacementView(providers=[self.provider(raw) for raw in self.providers(in_tree)])

    def project_usages(self, project_id: str) -> dict[str, int]:
        return {rc: int(n) for rc, n in self._get("/usages", {"project_id": project_id})["usages"].items()}


# ----------------------------------------------------------------------------------------------- comparison


class ExpectedUsage(_Model):
    capacity: int | None = None  # None: not checked
    used: int | None = None


class ExpectedHost(_Model):
    """gpufabric's view of one host as Placement should show it (root provider name = hypervisor / node name)."""

    host: str
    resources: dict[str, ExpectedUsage] = Field(default_factory=dict)
    traits: list[str] = Field(default_factory=list)


MismatchKind = Literal[
    "missing_provider", "unexpected_provider", "capacity", "used", "missing_resource", "missing_trait"
]


class Mismatch(_Model):
    host: str
    kind: MismatchKind
    resource_class: str | None = None
    trait: str | None = None
    expected: int | str | None = None
    actual: int | str | None = None
    message: str


def compare(view: PlacementView, expected: Iterable[ExpectedHost], *, report_unexpected: bool = True) -> list[Mismatch]:
    """Differences between Placement and gpufabric's view, GPU resource classes only (VGPU, PGPU, CUSTOM_*GPU*).

    Reported, never fixed: ``missing_provider`` (a host gpufabric knows that Placement does not), ``unexpected_provider``
    (a Placement tree with GPU inventory that gpufabric does not know; with ``report_unexpected``), ``missing_resource``,
    ``capacity``, ``used`` and ``missing_trait``.
    """
    actual = view.host_gpu_usage()
    traits = view.host_traits()
    out: list[Mismatch] = []
    known = set()
    for host in expected:
        known.add(host.host)
        if host.host not in actual:
            out.append(
                Mismatch(
                    host=host.host, kind="missing_provider", message=f"{host.host}: no resource provider in Placement"
                )
            )
            continue
        have = actual[host.host]
        for rc, want in sorted(host.resources.items()):
            got = have.get(rc)
            if got is None:
                if want.capacity:
                    out.append(
                        Mismatch(
                            host=host.host,
                            kind="missing_resource",
                            resource_class=rc,
                            expected=want.capacity,
                            actual=0,
                            message=f"{host.host}: Placement has no {rc} inventory (gpufabric: {want.capacity})",
                        )
                    )
                continue
            if want.capacity is not None and want.capacity != got.capacity:
                out.append(
                    Mismatch(
                        host=host.host,
                        kind="capacity",
                        resource_class=rc,
                        expected=want.capacity,
                        actual=got.capacity,
                        message=f"{host.host}: {rc} capacity {got.capacity} in Placement, {want.capacity} in gpufabric",
                    )
                )
            if want.used is not None and want.used != got.used:
                out.append(
                    Mismatch(
                        host=host.host,
                        kind="used",
                        resource_class=rc,
                        expected=want.used,
                        actual=got.used,
                        message=f"{host.host}: {rc} used {got.used} in Placement, {want.used} in gpufabric",
                    )
                )
        for trait in sorted(set(host.traits) - traits.get(host.host, set())):
            out.append(
                Mismatch(
                    host=host.host,
                    kind="missing_trait",
                    trait=trait,
                    expected=trait,
                    message=f"{host.host}: trait {trait} missing in Placement",
                )
            )
    if report_unexpected:
        for name, usage in sorted(actual.items()):
            if name not in known and usage:
                rcs = ", ".join(f"{rc}={u.capacity}" for rc, u in sorted(usage.items()))
                out.append(
                    Mismatch(
                        host=name,
                        kind="unexpected_provider",
                        actual=rcs,
                        message=f"{name}: GPU inventory in Placement ({rcs}) unknown to gpufabric",
                    )
                )
    return out


def flavor_capacity(
    flavor: GpuFlavor, view: PlacementView, alias_resource_classes: dict[str, str] | None = None
) -> int | None:
    """How many more servers of ``flavor`` fit, from Placement (per provider: free // per-server amount, bounded by
    ``max_unit``; providers must carry the flavor's required traits, on themselves or their root).

    A PCI-alias flavor counts the alias's resource class when Nova reports PCI devices to Placement (``[pci]
    report_in_placement``): pass ``alias_resource_classes`` (``{"a100": "CUSTOM_GPU_A100_80GB"}``, as in Nova's
    ``[pci] alias``). None when Placement cannot tell (legacy PCI tracking).
    """
    wants = {rc: n for rc, n in flavor.resources.items() if is_gpu_resource_class(rc)}
    if flavor.pci_alias and alias_resource_classes and flavor.pci_alias in alias_resource_classes:
        wants[alias_resource_classes[flavor.pci_alias]] = flavor.count
    if not wants:
        return None
    required = set(flavor.required_traits)
    fits: list[int] = []
    for rc, per_server in wants.items():
        fit = 0
        for p in view.providers:
            inv = p.inventories.get(rc)
            if inv is None or per_server > inv.max_unit:
                continue
            have = set(p.traits) | set(view.by_uuid(p.root_uuid).traits)
            if not required <= have:
                continue
            fit += p.free(rc) // per_server
        fits.append(fit)
    return min(fits)
