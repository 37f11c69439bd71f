"""The ``cyborg`` backend: a lease gets one Nova server per compute host, its GPUs attached by Cyborg.

The sync (``controller.backends.cyborg.discovery``) makes each compute node with Cyborg GPUs a host, one device per
Cyborg deployable. ``provision`` makes (once) the device profile ``gpufabric-<model>-x<count>`` (``count`` groups of
one ``PGPU`` with the model's trait) and the Nova flavor ``gf-cyborg-<model>-x<count>`` naming it
(``accel:device_profile``), boots the server on the compute node (``hypervisor_hostname``) tagged
``metadata.gpufabric_lease``; Nova asks Cyborg for the accelerator requests (ARQs), Cyborg binds them and tells
Nova (``accelerator-request-bound``), and the server goes ACTIVE. The lease is ready once the server is ACTIVE and
Cyborg shows ``count`` ARQs Bound to that server on that host; the result names them (attach handles: the PCI
addresses). ``release`` deletes the servers (Nova deletes their ARQs), then deletes any ARQ still left for them.

A server still building (or ARQs not yet bound) after ``inline_wait_s`` answers ``pending``; the reconcile job
follows it until ``boot_timeout_s``. "No valid host" deletes the server and raises ``TryElsewhere``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import select

from controller.backends.contract import Capabilities, LeaseInfo, ProvisionResult, TryElsewhere
from controller.backends.cyborg.check import CyborgObserved, cyborg_check
from controller.backends.cyborg.config import CyborgConfig
from controller.backends.cyborg.discovery import cyborg_docs
from controller.backends.openstack.access import server_machines, ssh_access
from controller.backends.openstack.common import (
    OpenStackBackendError,
)
from controller.backends.openstack.reconcile import last_report
from controller.backends.openstack.servers import NovaServersBackend, ServerTargets, server_name, servers_result
from controller.placement import Allocation
from controller.store.models import Backend
from drivers.openstack import (
    NovaDriver,
    NoValidHost,
    OpenStackCallFailed,
    OpenStackError,
    PlacementReader,
    ProvisionedServer,
    ProvisioningFailed,
    TaggedResource,
    product_for_name,
)
from drivers.openstack.cyborg import DEVICE_PROFILE_SPEC, Arq, CyborgDriver, model_slug, profile_groups, profile_name

log = logging.getLogger("gpufabric.backends.cyborg")


def flavor_name(model: str, count: int) -> str:
    return f"gf-cyborg-{model_slug(model)}-x{count}"


def model_trait(model: str) -> str:
    """The trait gpufabric's Cyborg driver gives a GPU of ``model`` (``CUSTOM_GPU_<NVML name>``)."""
    product = product_for_name(model)
    name = product.name if product else model
    return "CUSTOM_GPU_" + "".join(c if c.isalnum() else "_" for c in name.upper().removeprefix("NVIDIA ")).strip("_")


def wants(host: str, allocations: list[Allocation]) -> tuple[int, str]:
    """(GPU count, model) the lease holds on ``host``: Cyborg hands out whole GPUs of one model per server."""
    mine = [a for a in allocations if a.host_id == host]
    kinds = {a.kind for a in mine}
    models = {a.model for a in mine}
    if kinds != {"gpu"} or len(models) != 1:
        raise OpenStackBackendError(
            f"{host}: a Cyborg server gets whole GPUs of one model; the lease holds "
            f"{', '.join(sorted(f'{a.kind} {a.model}' for a in mine))} there"
        )
    return sum(a.units for a in mine), models.pop()


def arqs_ready(arqs: list[Arq], count: int, hypervisor: str) -> tuple[bool, str]:
    """Whether the server's ARQs are all Bound on ``hypervisor`` (and how many), with a summary for messages."""
    bound = [a for a in arqs if a.state == "Bound" and a.hostname == hypervisor]
    summary = ", ".join(f"{a.uuid[:8]} {a.state}@{a.hostname or '-'}" for a in arqs) or "none"
    return len(bound) == count and len(arqs) == count, summary


class CyborgBackend(NovaServersBackend):
    kind = "cyborg"
    description = "OpenStack Nova servers with GPUs attached by Cyborg (device profiles, accelerator requests)"
    config_model = CyborgConfig
    capabilities = Capabilities(
        access="one Nova server per compute host, its whole GPUs attached by Cyborg (a device profile named by "
        "the flavor), the tenant's SSH keys, a host key gpufabric made (its fingerprint in the lease's access) and a "
        "noVNC console URL; the agent starts from user data",
        slice_kinds=frozenset({"gpu"}),
        why_not="gpufabric's Cyborg driver reports whole GPUs (PGPU); vGPUs and MIG go through the nova kind",
        one_kind_per_host=True,
        one_kind_reason="a Nova server gets one flavor, so one device profile: whole GPUs of one model",
        validation="the servers' agents run nccl-tests (POST /v1/validations with hosts)",
        unsupported={
            "checks": "Cyborg backends report their health through reconcile (orphan ARQs, deployable and "
            "Placement mismatches)",
            "nccl": "agents run nccl-tests on Cyborg servers; no cluster job runner",
        },
    )
    resource = "nova_server"
    result_items = ("servers", "server_id")
    servers_label = "Cyborg/Nova"

    def nova(self, config: CyborgConfig, tenant: str | None = None) -> NovaDriver:
        auth = config.auth if tenant is None else config.auth_for(tenant)
        return NovaDriver(self.connections.get(auth))

    def cyborg(self, config: CyborgConfig) -> CyborgDriver:
        return CyborgDriver(self.connections.get(config.auth))

    # -- discovery and reconcile ----------------------------------------------------------------------------

    def observe(self, config: CyborgConfig) -> CyborgObserved:
        conn = self.connections.get(config.auth)
        nova = NovaDriver(conn)
        facts = nova.hypervisor_facts()
        aggregates = nova.aggregates()
        view = PlacementReader(conn).view()
        cyborg = self.cyborg(config)
        deployables = cyborg.deployables()
        docs, skipped = cyborg_docs(
            config,
            view,
            {h.name: h.up for h in facts},
            deployables,
            aggregates,
            {h.name: h.service_host for h in facts},
        )
        return CyborgObserved(docs, skipped, self.tagged(config), view, deployables, cyborg.arqs())

    def tagged(self, config: CyborgConfig) -> list[TaggedResource]:
        return self.nova(config).tagged(all_projects=True)

    def release_orphan(self, config: CyborgConfig, resource: TaggedResource) -> None:
        self._release_server(config, resource.id)

    def placement_report(self, name: str, seen: Any) -> dict[str, Any]:
        return cyborg_check(self.db, self.lease_directory, name, seen)

    def metrics(self) -> list[Metric]:
        families = super().metrics()
        orphans = GaugeMetricFamily(
            "gpufabric_cyborg_orphan_arqs",
            "Cyborg accelerator requests owned by no server of a live gpufabric lease, at the last reconcile",
            labels=["backend"],
        )
        arqs = GaugeMetricFamily(
            "gpufabric_cyborg_arqs", "Cyborg accelerator requests at the last reconcile", labels=["backend", "state"]
        )
        deployables = GaugeMetricFamily(
            "gpufabric_cyborg_deployables", "Cyborg deployables at the last reconcile", labels=["backend"]
        )
        for name in self._names():
            found = ((last_report(self.db, name) or {}).get("placement") or {}).get("cyborg")
            if not found:
                continue
            orphans.add_metric([name], len(found.get("orphan_arqs") or []))
            arqs.add_metric([name, "bound"], found.get("bound_arqs", 0))
            arqs.add_metric([name, "all"], found.get("arqs", 0))
            deployables.add_metric([name], found.get("deployables", 0))
        return [*families, orphans, arqs, deployables]

    def _names(self) -> list[str]:
        with self.db.session() as session:
            return list(session.scalars(select(Backend.name).where(Backend.kind == self.kind).order_by(Backend.name)))

    # -- provisioning ---------------------------------------------------------------------------------------

    def ensure_flavor(self, config: CyborgConfig, model: str, count: int) -> str:
        """The device profile and the flavor naming it for ``count`` GPUs of ``model``; returns the flavor id."""
        profile = profile_name(model, count)
        self.cyborg(config).ensure_profile(profile, profile_groups(model_trait(model), count))
        compute = self.nova(config).compute
        name = flavor_name(model, count)
        for flavor in NovaDriver._call("flavors", lambda: list(compute.flavors(details=True, is_public=None))):
            if flavor.name == name:
                return str(flavor.id)
        flavor = NovaDriver._call(
            "create_flavor",
            lambda: compute.create_flavor(
                name=name, vcpus=config.flavor_vcpus, ram=config.flavor_ram_mb, disk=config.flavor_disk_gb
            ),
        )
        NovaDriver._call(
            "create_flavor_extra_specs",
            lambda: compute.create_flavor_extra_specs(flavor, {DEVICE_PROFILE_SPEC: profile}),
        )
        return str(flavor.id)

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        targets = self.targets(lease, CyborgConfig)
        config: CyborgConfig = targets.config
        try:
            return self._boot(targets, lease, allocations)
        except (TryElsewhere, OpenStackBackendError) as exc:
            self._undo(config, lease, exc)
            raise
        except OpenStackError as exc:
            self._undo(config, lease, exc)
            raise OpenStackBackendError(f"Cyborg/Nova: {exc}") from None

    def _boot(self, targets: ServerTargets, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        config: CyborgConfig = targets.config
        driver = self.nova(config, lease.tenant)
        cyborg = self.cyborg(config)
        wanted = {host: wants(host, allocations) for host in targets.hypervisors}
        flavors = {host: self.ensure_flavor(config, model, count) for host, (count, model) in wanted.items()}
        deadline = time.monotonic() + config.inline_wait_s
        while True:
            states: dict[str, ProvisionedServer] = {}
            waiting: list[str] = []
            arqs: dict[str, list[Arq]] = {}
            for host, hypervisor in sorted(targets.hypervisors.items()):
                name = server_name(lease.id, host)
                existing = driver.find(lease.id, name)
                request = self.boot_request(lease, targets, host, flavors[host], existing)
                try:
                    states[host] = server = driver.provision(request, wait=False)
                except NoValidHost as exc:
                    raise TryElsewhere(f"Nova on {hypervisor}: {exc.reason}", hosts=[host]) from None
                except ProvisioningFailed as exc:
                    raise OpenStackBackendError(f"Nova server {name} on {hypervisor}: {exc.reason}") from None
                except OpenStackCallFailed as exc:
                    waiting.append(f"{name} unknown ({exc})")
                    continue
                if server.status.upper() != "ACTIVE":
                    waiting.append(f"{name} {server.status}")
                    continue
                arqs[host] = cyborg.arqs(server.server_id)
                ok, summary = arqs_ready(arqs[host], wanted[host][0], hypervisor)
                if not ok:
                    waiting.append(f"{name} ACTIVE, ARQs {summary}")
            if not waiting:
                result = self._result(targets.backend, states, arqs, wanted)
                result["access"] = ssh_access(config, lease, server_machines(driver, states))
                return ProvisionResult("ready", result)
            elapsed = lease.seconds_provisioning()
            if elapsed > config.boot_timeout_s:
                raise OpenStackBackendError(
                    f"Cyborg servers not ready after {elapsed:.0f} s (boot_timeout_s {config.boot_timeout_s:g}): "
                    + "; ".join(waiting)
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ProvisionResult("pending", message="Cyborg servers building: " + "; ".join(sorted(waiting)))
            time.sleep(min(config.poll_interval_s, remaining))

    @staticmethod
    def _result(
        backend: str,
        states: dict[str, ProvisionedServer],
        arqs: dict[str, list[Arq]],
        wanted: dict[str, tuple[int, str]],
    ) -> dict[str, Any]:
        servers = []
        for host, s in sorted(states.items()):
            servers.append(
                {
                    "host": host,
                    "server_id": s.server_id,
                    "server": s.name,
                    "status": s.status,
                    "hypervisor": s.host,
                    "addresses": s.addresses,
                    "device_profile": profile_name(wanted[host][1], wanted[host][0]),
                    "accelerators": [
                        {
                            "arq": a.uuid,
                            "state": a.state,
                            "hostname": a.hostname,
                            "device_rp_uuid": a.device_rp_uuid,
                            "attach_handle_type": a.attach_handle_type,
                            "attach_handle": a.attach_handle_info,
                        }
                        for a in sorted(arqs.get(host, []), key=lambda a: a.uuid)
                    ],
                }
            )
        return servers_result("cyborg", backend, servers)

    def _release_server(self, config: CyborgConfig, server_id: str) -> None:
        """Delete the server (Nova deletes its ARQs), then any ARQ Cyborg still keeps for it."""
        self.nova(config).release(server_id, config.delete_poll)
        cyborg = self.cyborg(config)
        for arq in cyborg.arqs(server_id):
            log.warning("server %s deleted but its ARQ %s (%s) is left: deleting it", server_id, arq.uuid, arq.state)
            try:
                cyborg.delete_arq(arq.uuid)
            except OpenStackError as exc:
                # Cyborg deletes a bound ARQ only for a caller with a service token (Nova): the reconciler reports it.
                log.warning("could not delete ARQ %s (%s); reconcile reports it as an orphan", arq.uuid, exc)

    def _delete_servers(self, config: CyborgConfig, lease_id: str) -> list[str]:
        deleted = []
        for tagged in self.tagged(config):
            if tagged.lease_id == lease_id:
                self._release_server(config, tagged.id)
                deleted.append(tagged.id)
        return deleted
