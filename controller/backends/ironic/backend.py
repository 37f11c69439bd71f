"""The ``ironic`` backend: a lease gets whole bare-metal GPU nodes, deployed for it.

Each of the lease's hosts is an Ironic node (the sync, ``controller.backends.ironic.discovery``, made it a host
with its GPUs). A node is leased whole: a lease holding only some of a node's GPUs is sent elsewhere
(``TryElsewhere``), because a deployed node belongs to one tenant.

``provision`` tags the node with the lease (``extra.gpufabric_lease``), deploys the backend's image with a config
drive that carries a fresh agent-bootstrap token, the controller URL and the tenant's SSH keys, and polls (the
backend's interval, never openstacksdk's ``wait=True``) for up to ``inline_wait_s``. A node still deploying then
answers ``pending``; the reconcile job calls ``LeaseService.reprovision`` until it is ``active`` (``ready``: the
result names the nodes and their addresses) or ``deploy_timeout_s`` has passed since the lease started
provisioning. A failed or timed-out deploy leaves the node in maintenance with the reason (for an admin to look
at; it is then an orphan of a failed lease, which the ``orphans`` policy reports or releases) and fails the lease.
A node that is not ``available`` any more when its deploy should start (maintenance, taken outside gpufabric,
deleted) sends the lease to another candidate.

``release`` undeploys every node tagged for the lease (with cleaning when the deployment runs it), waits for
``available``, removes the tag and revokes the lease's bootstrap token.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from controller.backends.contract import Capabilities, LeaseInfo, ProvisionResult, TryElsewhere
from controller.backends.ironic.config import IronicConfig
from controller.backends.ironic.discovery import ironic_docs
from controller.backends.openstack.access import machine, ssh_access
from controller.backends.openstack.common import (
    IRONIC_NODE_LABEL,
    OpenStackBackendError,
    bootstrap_for,
    lease_hosts,
    release_configs,
    revoke_bootstrap,
)
from controller.backends.openstack.family import OpenStackBackend
from controller.backends.openstack.hosts import Observed
from controller.placement import Allocation
from drivers.openstack import (
    AgentBootstrap,
    IronicDeployRequest,
    IronicDriver,
    OpenStackCallFailed,
    OpenStackError,
    ProvisionedNode,
    ProvisioningFailed,
    ResourceNotFound,
    TaggedResource,
)

log = logging.getLogger("gpufabric.backends.ironic")

NO_IRONIC_CONSOLE = (
    "none: an Ironic node's console is its BMC's serial console, an admin tool in Ironic's API, not handed to tenants"
)


class IronicBackend(OpenStackBackend):
    kind = "ironic"
    description = "OpenStack Ironic bare-metal nodes (whole-node passthrough)"
    config_model = IronicConfig
    capabilities = Capabilities(
        access="whole bare-metal nodes deployed with the backend's image, the tenant's SSH keys and a host key "
        "gpufabric made (its fingerprint in the lease's access); the agent registers from the config drive",
        slice_kinds=frozenset({"gpu"}),
        why_not="Ironic nodes are leased whole, as whole GPUs",
        whole_node=True,
        whole_node_reason="a deployed node belongs to one tenant: a lease takes every GPU of its nodes",
        validation="the deployed nodes' agents run nccl-tests (POST /v1/validations with hosts)",
        unsupported={
            "checks": "Ironic backends report their health through reconcile (orphans, missing nodes)",
            "nccl": "agents run nccl-tests on Ironic nodes; no cluster job runner",
        },
    )
    resource = "ironic_node"
    result_items = ("nodes", "node_id")

    def driver(self, config: IronicConfig) -> IronicDriver:
        return IronicDriver(
            self.connections.get(config.auth),
            resource_class_prefix=config.resource_class_prefix,
            clean_on_release=config.cleaning == "expected",
        )

    # -- discovery and reconcile ----------------------------------------------------------------------------

    def observe(self, config: IronicConfig) -> Observed:
        driver = self.driver(config)
        nodes = driver.discover()
        # A node deployed for a live lease is ours (not placeable, kept); the store is asked only about those leases.
        statuses = self.lease_directory.lease_status(n.lease_id for n in nodes if n.lease_id is not None)
        live = {lease_id for lease_id, status in statuses.items() if status.live}
        docs, skipped = ironic_docs(config, nodes, live)
        return Observed(docs, skipped, driver.tagged())

    def tagged(self, config: IronicConfig) -> list[TaggedResource]:
        return self.driver(config).tagged()

    def release_orphan(self, config: IronicConfig, resource: TaggedResource) -> None:
        self.driver(config).release(resource.id, config.release_poll, lease_id=resource.lease_id)

    def placement_report(self, name: str, seen: Observed) -> dict[str, Any]:
        return {
            "checked": False,
            "reason": "Ironic nodes are compared through their state and tags; standalone Ironic has no Placement",
        }

    # -- provisioning ---------------------------------------------------------------------------------------

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        with self.db.session() as session:
            found = lease_hosts(session, lease.hosts, self.kind, IronicConfig)
            config: IronicConfig = found.config
            nodes: dict[str, str] = {}
            for host in found.hosts:
                held = {a.device_uuid for a in allocations if a.host_id == host.hostname}
                have = {d.uuid for d in host.devices}
                if held != have:
                    raise TryElsewhere(
                        f"Ironic node {host.hostname} is leased whole ({len(have)} GPUs); the lease holds {len(held)} "
                        f"of them (ask for all its GPUs with topology same-host to get this node)",
                        hosts=[host.hostname],
                    )
                node_id = (host.labels or {}).get(IRONIC_NODE_LABEL)
                if not node_id:
                    raise OpenStackBackendError(f"host {host.hostname} has no {IRONIC_NODE_LABEL} label")
                nodes[host.hostname] = str(node_id)
        driver = self.driver(config)
        try:
            return self._deploy(driver, config, found.backend, lease, nodes)
        except (TryElsewhere, OpenStackBackendError) as exc:
            self._undo(driver, config, lease, exc)
            raise

    def _undo(self, driver: IronicDriver, config: IronicConfig, lease: LeaseInfo, exc: Exception) -> None:
        """The lease will not get these nodes: undeploy the ones deploying fine for it (a failed node stays in
        maintenance, tagged, for an admin; the orphans policy reports or releases it)."""
        revoke_bootstrap(self.db, lease.id)
        try:
            tagged = [t for t in driver.tagged() if t.lease_id == lease.id and not t.maintenance]
        except OpenStackError as err:
            log.warning(
                "lease %s: cannot list its nodes to undo them (%s); the reconciler will find them", lease.id, err
            )
            return
        for t in tagged:
            try:
                driver.release(t.id, config.release_poll, lease_id=lease.id)
                log.info("lease %s: undeployed %s after: %s", lease.id, t.name, exc)
            except OpenStackError as err:
                log.warning("lease %s: undeploying %s failed: %s", lease.id, t.name, err)

    def _deploy(
        self, driver: IronicDriver, config: IronicConfig, backend: str, lease: LeaseInfo, nodes: dict[str, str]
    ) -> ProvisionResult:
        deadline = time.monotonic() + config.inline_wait_s
        while True:
            states = {name: self._step(driver, config, backend, lease, name, node) for name, node in nodes.items()}
            waiting = {n: s for n, s in states.items() if s.provision_state != "active"}
            if not waiting:
                return ProvisionResult("ready", self._result(backend, config, lease, states))
            elapsed = lease.seconds_provisioning()
            if elapsed > config.deploy_timeout_s:
                self._give_up(driver, config, lease, waiting, elapsed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                summary = ", ".join(f"{n} {s.provision_state}" for n, s in sorted(waiting.items()))
                return ProvisionResult("pending", message=f"Ironic deploy in progress: {summary}")
            time.sleep(min(config.poll_interval_s, remaining))

    def _step(
        self, driver: IronicDriver, config: IronicConfig, backend: str, lease: LeaseInfo, name: str, node_id: str
    ) -> ProvisionedNode:
        """Start the node's deploy, or look at the one running (never blocks on it)."""
        try:
            current = driver.host(node_id)
        except ResourceNotFound:
            raise TryElsewhere(f"Ironic node {name} ({node_id}) no longer exists", hosts=[name]) from None
        except OpenStackCallFailed as exc:
            return ProvisionedNode(node_id=node_id, name=name, lease_id=lease.id, provision_state=f"unknown ({exc})")
        mine = current.lease_id == lease.id
        if not mine:
            if current.lease_id is not None:
                raise TryElsewhere(f"Ironic node {name} is deployed for lease {current.lease_id}", hosts=[name])
            if not current.available:
                why = (
                    f"in maintenance ({current.maintenance_reason})" if current.maintenance else current.provision_state
                )
                raise TryElsewhere(f"Ironic node {name} is {why}, not available", hosts=[name])
        elif current.maintenance:
            # An admin (or Ironic) put our node into maintenance mid-deploy: it will not finish by itself.
            raise OpenStackBackendError(
                f"Ironic node {name} went into maintenance while deploying: {current.maintenance_reason or 'no reason'}"
            )
        # The node already carries this lease's deploy (a restart, a second look): its token is in its config drive.
        bootstrap = (
            bootstrap_for(self.db, lease, backend, config)
            if not mine
            else AgentBootstrap(controller_url=str(config.controller_url), bootstrap_token="unused")
        )
        request = IronicDeployRequest(
            lease_id=lease.id,
            node=node_id,
            image_source=config.image_source,
            image_checksum=config.image_checksum,
            root_gb=config.root_gb,
            bootstrap=bootstrap,
            poll=config.deploy_poll,
        )
        try:
            return driver.provision(request, wait=False)
        except ProvisioningFailed as exc:  # deploy refused or failed: the driver put the node into maintenance
            raise OpenStackBackendError(f"Ironic node {name}: {exc.reason}") from None
        except OpenStackCallFailed as exc:
            return ProvisionedNode(node_id=node_id, name=name, lease_id=lease.id, provision_state=f"unknown ({exc})")

    def _give_up(
        self,
        driver: IronicDriver,
        config: IronicConfig,
        lease: LeaseInfo,
        waiting: dict[str, ProvisionedNode],
        elapsed: float,
    ) -> None:
        reasons = []
        for name, state in sorted(waiting.items()):
            reason = (
                f"gpufabric lease {lease.id}: deploy did not reach active within {config.deploy_timeout_s:g} s "
                f"(last state {state.provision_state})"
            )
            driver.fail_node(state.node_id, reason)
            reasons.append(f"{name}: {state.provision_state}")
        raise OpenStackBackendError(
            f"Ironic deploy not finished after {elapsed:.0f} s (deploy_timeout_s {config.deploy_timeout_s:g}): "
            + ", ".join(reasons)
        )

    @staticmethod
    def _result(
        backend: str, config: IronicConfig, lease: LeaseInfo, states: dict[str, ProvisionedNode]
    ) -> dict[str, Any]:
        nodes = [
            {
                "host": name,
                "node_id": s.node_id,
                "node": s.name,
                "provision_state": s.provision_state,
                "addresses": s.addresses,
            }
            for name, s in sorted(states.items())
        ]
        result: dict[str, Any] = {
            "backend": "ironic",
            "backend_name": backend,
            "nodes": nodes,
            "agent": {"controller_url": str(config.controller_url).rstrip("/"), "config_drive": True},
        }
        if len(nodes) == 1:
            result["host"] = nodes[0]["host"]
            result["node"] = nodes[0]["node"]
            result["addresses"] = nodes[0]["addresses"]
        machines = [
            machine(name, s.name, s.addresses, s.host_public_key, None, NO_IRONIC_CONSOLE)
            for name, s in sorted(states.items())
        ]
        result["access"] = ssh_access(config, lease, machines)  # stored encrypted, shown to the tenant only
        return result

    # -- release --------------------------------------------------------------------------------------------

    def release(self, lease: LeaseInfo) -> None:
        """Undeploy every node tagged for the lease (found in Ironic, so a half-done deploy is found too)."""
        for config in release_configs(self.db, lease.hosts, self.kind, IronicConfig):
            assert isinstance(config, IronicConfig)
            driver = self.driver(config)
            errors = []
            for tagged in driver.tagged():
                if tagged.lease_id != lease.id:
                    continue
                try:
                    driver.release(tagged.id, config.release_poll, lease_id=lease.id)
                except OpenStackError as exc:
                    errors.append(f"{tagged.name}: {exc}")
            if errors:
                raise OpenStackBackendError("Ironic undeploy failed: " + "; ".join(errors))
        revoke_bootstrap(self.db, lease.id)
