"""What the two kinds that lease Nova servers (``nova`` and ``cyborg``) share: where each lease host's server boots,
its name and boot request, the result's envelope, undoing a provisioning that will not finish, and the release.

Each kind keeps what differs: the flavor it boots (``nova``: picked from Nova's GPU flavors; ``cyborg``: made for a
device profile), when a server counts as ready (``cyborg`` also waits for its accelerator requests), what each
server's entry in the result says, and how a server is deleted (``_delete_servers``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.backends.contract import LeaseInfo
from controller.backends.openstack.common import (
    HYPERVISOR_LABEL,
    OpenStackBackendError,
    bootstrap_for,
    lease_hosts,
    release_configs,
    revoke_bootstrap,
)
from controller.backends.openstack.config import NovaServersConfig
from controller.backends.openstack.family import OpenStackBackend
from controller.backends.openstack.topology import boot_zones
from drivers.openstack import NovaBootRequest, OpenStackError

log = logging.getLogger("gpufabric.backends.openstack")


def server_name(lease_id: str, host: str) -> str:
    return f"gf-{lease_id[:12]}-{host}"[:63]


@dataclass(frozen=True)
class ServerTargets:
    """A lease's hosts as its servers boot there: the backend and its config, each host's hypervisor (its
    ``gpufabric.dev/hypervisor`` label, else its name) and zone (``boot_zones``)."""

    backend: str
    config: Any
    hypervisors: dict[str, str]
    zones: dict[str, str | None]


def servers_result(kind: str, backend: str, servers: list[dict[str, Any]]) -> dict[str, Any]:
    """A ready lease's result: one entry per server; a one-server lease also names its host and server at the top."""
    result: dict[str, Any] = {"backend": kind, "backend_name": backend, "servers": servers}
    if len(servers) == 1:
        result.update(host=servers[0]["host"], server_id=servers[0]["server_id"], server=servers[0]["server"])
    return result


class NovaServersBackend(OpenStackBackend):
    """A kind whose lease is one Nova server per host."""

    # How the kind names its servers in a failed release ("Nova delete failed: ...").
    servers_label: ClassVar[str]

    @abstractmethod
    def _delete_servers(self, config: Any, lease_id: str) -> list[str]:
        """Delete every server tagged for the lease (and what the kind attached to it); their ids."""

    def targets(self, lease: LeaseInfo, model: type[NovaServersConfig]) -> ServerTargets:
        with self.db.session() as session:
            found = lease_hosts(session, lease.hosts, self.kind, model)
            hypervisors = {h.hostname: str((h.labels or {}).get(HYPERVISOR_LABEL) or h.hostname) for h in found.hosts}
            zones = boot_zones({h.hostname: h.labels for h in found.hosts}, found.config.az)
        return ServerTargets(found.backend, found.config, hypervisors, zones)

    def boot_request(
        self, lease: LeaseInfo, targets: ServerTargets, host: str, flavor_id: str, existing: object | None
    ) -> NovaBootRequest:
        """The server of ``host`` for the lease; the agent's bootstrap only for a server not made yet (``existing``)."""
        config: NovaServersConfig = targets.config
        return NovaBootRequest(
            lease_id=lease.id,
            flavor_id=flavor_id,
            image_id=config.image,
            name=server_name(lease.id, host),
            bootstrap=None if existing is not None else bootstrap_for(self.db, lease, targets.backend, config),
            networks=config.networks if isinstance(config.networks, str) else [{"uuid": n} for n in config.networks],
            availability_zone=targets.zones.get(host, config.az),
            hypervisor_hostname=targets.hypervisors[host] if config.pin_hypervisor else None,
            poll=config.boot_poll,
        )

    def _undo(self, config: Any, lease: LeaseInfo, exc: Exception) -> None:
        """The lease will not run here: delete the servers already booted for it (on any of its hosts)."""
        revoke_bootstrap(self.db, lease.id)
        try:
            self._delete_servers(config, lease.id)
            log.info("lease %s: deleted its servers after: %s", lease.id, exc)
        except OpenStackError as err:
            log.warning("lease %s: could not delete its servers (%s); the reconciler will find them", lease.id, err)

    def release(self, lease: LeaseInfo) -> None:
        errors = []
        for config in release_configs(self.db, lease.hosts, self.kind, self.config_model):
            try:
                self._delete_servers(config, lease.id)
            except OpenStackError as exc:
                errors.append(str(exc))
        if errors:
            raise OpenStackBackendError(f"{self.servers_label} delete failed: " + "; ".join(errors))
        revoke_bootstrap(self.db, lease.id)
