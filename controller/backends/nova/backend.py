"""The ``nova`` backend: a lease gets one Nova server per compute host, with the flavor its slices ask for.

The sync (``controller.backends.nova.discovery``) makes each compute node a host whose devices come from
Placement: a nested pGPU provider with ``VGPU`` inventory is a device offering vGPU slices, a PCI GPU resource class
(``[pci] report_in_placement``) gives whole-GPU devices. ``provision`` picks, per host, the smallest GPU flavor that
gives exactly what the lease holds there: whole GPUs of the model (PCI alias or ``CUSTOM_*GPU*`` resource class
flavor) or vGPUs (``resources:VGPU``, of the model and, if the flavor names one, the vGPU type). It boots the server
on that compute node (``hypervisor_hostname``, compute API 2.74; Nova's scheduler and Placement still check it) in
the tenant's project (``tenants`` in the config, else the backend's own), with user data that starts the agent
(bootstrap token, controller URL, the tenant's SSH keys), tagged ``metadata.gpufabric_lease``.

Nova's "No valid host" (the host is full in Nova's view, whatever gpufabric believed) deletes the server and
raises ``TryElsewhere``: the lease is placed again without that host. A server still building after
``inline_wait_s`` answers ``pending`` and the reconcile job follows it until ``boot_timeout_s``. ``release``
deletes every server tagged for the lease.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from controller.backends.contract import Capabilities, LeaseInfo, ProvisionResult, TryElsewhere
from controller.backends.nova.config import NovaConfig
from controller.backends.nova.discovery import nova_docs
from controller.backends.nova.placement_check import placement_check
from controller.backends.openstack.access import server_machines, ssh_access
from controller.backends.openstack.common import (
    OpenStackBackendError,
)
from controller.backends.openstack.hosts import Observed
from controller.backends.openstack.servers import NovaServersBackend, ServerTargets, server_name, servers_result
from controller.placement import Allocation
from drivers.openstack import (
    GpuFlavor,
    NoMatchingFlavor,
    NovaDriver,
    NoValidHost,
    OpenStackCallFailed,
    PlacementReader,
    ProvisionedServer,
    ProvisioningFailed,
    TaggedResource,
    match_flavor,
    product_for_name,
)

log = logging.getLogger("gpufabric.backends.nova")


def _same_model(a: str | None, b: str) -> bool:
    if a is None:
        return False
    pa, pb = product_for_name(a), product_for_name(b)
    return (pa.model if pa else a).lower() == (pb.model if pb else b).lower()


def pick_flavor(
    flavors: list[GpuFlavor], kind: Literal["gpu", "vgpu"], count: int, model: str, vgpu_type: str | None = None
) -> GpuFlavor:
    """The smallest flavor giving exactly ``count`` whole GPUs / vGPUs of ``model`` (a vGPU flavor that names a type
    must name ``vgpu_type``; one that names none takes whatever type the host's pGPUs are configured with)."""
    if kind == "gpu":
        return match_flavor(flavors, "gpu", count, model=model)
    fits = [
        f
        for f in flavors
        if f.kind == "vgpu"
        and f.count == count
        and _same_model(f.model, model)
        and (f.vgpu is None or vgpu_type is None or f.vgpu.type_name.lower() == vgpu_type.lower())
    ]
    if not fits:
        seen = ", ".join(f"{f.name}({f.kind}x{f.count} {f.model or '?'})" for f in flavors) or "none"
        raise NoMatchingFlavor(f"no flavor gives {count} x vgpu {model} {vgpu_type or ''}; GPU flavors: {seen}")
    return min(fits, key=lambda f: (f.vgpu is None, f.vcpus, f.ram_mb, f.disk_gb, f.name))


def _wants(host: str, allocations: list[Allocation]) -> tuple[Literal["gpu", "vgpu"], int, str, str | None]:
    mine = [a for a in allocations if a.host_id == host]
    kinds = {a.kind for a in mine}
    models = {a.model for a in mine}
    if len(kinds) != 1 or len(models) != 1:
        raise OpenStackBackendError(
            f"{host}: a Nova server gets one kind of GPU slice of one model; the lease holds "
            f"{', '.join(sorted(f'{a.kind} {a.model}' for a in mine))} there"
        )
    kind = kinds.pop()
    if kind not in ("gpu", "vgpu"):
        raise OpenStackBackendError(f"{host}: Nova provides whole GPUs and vGPUs, not {kind} slices")
    types = {a.vgpu_type for a in mine if a.vgpu_type}
    return kind, sum(a.units for a in mine), models.pop(), (types.pop() if len(types) == 1 else None)  # type: ignore[return-value]


class NovaBackend(NovaServersBackend):
    kind = "nova"
    description = "OpenStack Nova hosts (PCI passthrough, vGPU)"
    config_model = NovaConfig
    capabilities = Capabilities(
        access="one Nova server per compute host with the GPU flavor the lease holds there, the tenant's SSH keys, a "
        "host key gpufabric made (its fingerprint in the lease's access) and a noVNC console URL; the agent starts "
        "from user data",
        slice_kinds=frozenset({"gpu", "vgpu"}),
        why_not="Nova provides whole GPUs (PCI passthrough) and vGPUs",
        one_kind_per_host=True,
        one_kind_reason="a Nova server gets one flavor: whole GPUs or vGPUs of one model",
        validation="the servers' agents run nccl-tests (POST /v1/validations with hosts)",
        unsupported={
            "checks": "Nova backends report their health through reconcile (orphans, Placement mismatches)",
            "nccl": "agents run nccl-tests on Nova servers; no cluster job runner",
        },
    )
    resource = "nova_server"
    result_items = ("servers", "server_id")
    servers_label = "Nova"

    def driver(self, config: NovaConfig, tenant: str | None = None) -> NovaDriver:
        auth = config.auth if tenant is None else config.auth_for(tenant)
        return NovaDriver(self.connections.get(auth), alias_models=config.pci_alias_models)

    # -- discovery and reconcile ----------------------------------------------------------------------------

    def observe(self, config: NovaConfig) -> Observed:
        conn = self.connections.get(config.auth)
        driver = NovaDriver(conn)
        facts = driver.hypervisor_facts()
        aggregates = driver.aggregates()
        view = PlacementReader(conn).view()
        docs, skipped = nova_docs(
            config,
            view,
            {h.name: h.up for h in facts},
            aggregates,
            {h.name: h.service_host for h in facts},
        )
        return Observed(docs, skipped, self.tagged(config), view)

    def tagged(self, config: NovaConfig) -> list[TaggedResource]:
        return self.driver(config).tagged(all_projects=True)

    def release_orphan(self, config: NovaConfig, resource: TaggedResource) -> None:
        self.driver(config).release(resource.id, config.delete_poll)

    def placement_report(self, name: str, seen: Observed) -> dict[str, Any]:
        return placement_check(self.db, self.lease_directory, name, seen)

    # -- provisioning ---------------------------------------------------------------------------------------

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        targets = self.targets(lease, NovaConfig)
        config: NovaConfig = targets.config
        driver = self.driver(config, lease.tenant)
        try:
            return self._boot(driver, targets, lease, allocations)
        except (TryElsewhere, OpenStackBackendError) as exc:
            self._undo(config, lease, exc)
            raise

    def _boot(
        self, driver: NovaDriver, targets: ServerTargets, lease: LeaseInfo, allocations: list[Allocation]
    ) -> ProvisionResult:
        config: NovaConfig = targets.config
        flavors: list[GpuFlavor] | None = None
        deadline = time.monotonic() + config.inline_wait_s
        picked: dict[str, GpuFlavor] = {}
        while True:
            states: dict[str, ProvisionedServer] = {}
            for host, hypervisor in sorted(targets.hypervisors.items()):
                name = server_name(lease.id, host)
                try:
                    existing = driver.find(lease.id, name)
                    if host not in picked:
                        if flavors is None:
                            flavors = driver.discover_flavors()
                        kind, count, model, vgpu_type = _wants(host, allocations)
                        try:
                            picked[host] = pick_flavor(flavors, kind, count, model, vgpu_type)
                        except NoMatchingFlavor as exc:
                            raise TryElsewhere(f"Nova: {exc}", hosts=[host]) from None
                    request = self.boot_request(lease, targets, host, picked[host].flavor_id, existing)
                    states[host] = driver.provision(request, wait=False)
                except NoValidHost as exc:
                    raise TryElsewhere(f"Nova on {hypervisor}: {exc.reason}", hosts=[host]) from None
                except ProvisioningFailed as exc:
                    raise OpenStackBackendError(f"Nova server {name} on {hypervisor}: {exc.reason}") from None
                except OpenStackCallFailed as exc:
                    states[host] = ProvisionedServer(
                        server_id="", name=name, lease_id=lease.id, status=f"unknown ({exc})"
                    )
            waiting = {h: s for h, s in states.items() if s.status.upper() != "ACTIVE"}
            if not waiting:
                result = self._result(targets.backend, states, picked)
                result["access"] = ssh_access(config, lease, server_machines(driver, states))
                return ProvisionResult("ready", result)
            elapsed = lease.seconds_provisioning()
            if elapsed > config.boot_timeout_s:
                summary = ", ".join(f"{s.name} {s.status}" for s in waiting.values())
                raise OpenStackBackendError(
                    f"Nova servers not ACTIVE after {elapsed:.0f} s (boot_timeout_s {config.boot_timeout_s:g}): {summary}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                summary = ", ".join(f"{s.name} {s.status}" for s in sorted(waiting.values(), key=lambda s: s.name))
                return ProvisionResult("pending", message=f"Nova servers building: {summary}")
            time.sleep(min(config.poll_interval_s, remaining))

    def _delete_servers(self, config: NovaConfig, lease_id: str) -> list[str]:
        admin = self.driver(config)
        deleted = []
        for tagged in admin.tagged(all_projects=True):
            if tagged.lease_id == lease_id:
                admin.release(tagged.id, config.delete_poll)
                deleted.append(tagged.id)
        return deleted

    @staticmethod
    def _result(backend: str, states: dict[str, ProvisionedServer], flavors: dict[str, GpuFlavor]) -> dict[str, Any]:
        servers = []
        for host, s in sorted(states.items()):
            f = flavors[host]
            servers.append(
                {
                    "host": host,
                    "server_id": s.server_id,
                    "server": s.name,
                    "status": s.status,
                    "hypervisor": s.host,
                    "addresses": s.addresses,
                    "flavor": {"id": f.flavor_id, "name": f.name, "kind": f.kind, "count": f.count},
                }
            )
        return servers_result("nova", backend, servers)
