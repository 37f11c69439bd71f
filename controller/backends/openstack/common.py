"""What the ``ironic`` and ``nova`` backends share: connections, the store rows a lease's hosts come from, and the
agent bootstrap token a provisioned machine gets."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from controller.auth.tokens import Role, create_api_token
from controller.backends.contract import LeaseInfo, ProvisionFailed
from controller.backends.openstack.config import OpenStackBackendConfig, stored_auth
from controller.store.db import Database
from controller.store.models import ApiToken, Backend, Host
from drivers.openstack import AgentBootstrap, OpenStackAuth, OpenStackConfigError, connect, new_host_key

# Host labels the sync writes and the provisioners read.
SOURCE_LABEL = "gpufabric.dev/openstack-source"  # "ironic" | "nova"
IRONIC_NODE_LABEL = "gpufabric.dev/ironic-node"  # node UUID
IRONIC_STATE_LABEL = "gpufabric.dev/ironic-state"  # provision state (+ " maintenance") at the last sync
RESOURCE_CLASS_LABEL = "gpufabric.dev/resource-class"
HYPERVISOR_LABEL = "gpufabric.dev/nova-hypervisor"
COST_LABEL = "gpufabric.dev/cost"
REGION_LABEL = "gpufabric.dev/region"
AZ_LABEL = "gpufabric.dev/az"
BOOTSTRAP_TOKEN_PREFIX = "lease:"


class OpenStackBackendError(ProvisionFailed):
    pass


class OpenStackConnections:
    """One openstacksdk connection per distinct auth (Keystone tokens are reused across calls), kept by the
    backends of one app (``controller.backends.registry.build_backends`` gives ironic and nova the same one)."""

    def __init__(self) -> None:
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, auth: OpenStackAuth) -> Any:
        key = hashlib.sha256(json.dumps(stored_auth(auth), sort_keys=True).encode()).hexdigest()
        with self._lock:
            conn = self._connections.get(key)
            if conn is None:
                try:
                    conn = connect(auth)
                except OpenStackConfigError as exc:
                    raise OpenStackBackendError(f"OpenStack configuration: {exc}") from None
                self._connections[key] = conn
            return conn


@dataclass
class LeaseHosts:
    backend: str
    config: Any
    hosts: list[Host]


def lease_hosts(
    session: Session, hostnames: Iterable[str], kind: str, model: type[OpenStackBackendConfig]
) -> LeaseHosts:
    """The store rows of a lease's hosts, which must all belong to one backend of ``kind``."""
    names = sorted(set(hostnames))
    rows = list(
        session.scalars(select(Host).where(Host.hostname.in_(names)).options(selectinload(Host.devices))).unique()
    )
    missing = sorted(set(names) - {h.hostname for h in rows})
    if missing:
        raise OpenStackBackendError(f"hosts {', '.join(missing)} are gone from the store")
    backends = {h.backend.name: h.backend for h in rows if h.backend is not None}
    if len(backends) != 1 or any(b.kind != kind for b in backends.values()):
        raise OpenStackBackendError(f"the lease's hosts span backends {sorted(backends)}; it needs one {kind} backend")
    backend = next(iter(backends.values()))
    return LeaseHosts(backend.name, model.model_validate(backend.config), sorted(rows, key=lambda h: h.hostname))


def release_configs(
    db: Database, hostnames: Iterable[str], kind: str, model: type[OpenStackBackendConfig]
) -> list[Any]:
    """The backend configs to release a lease in: its hosts' backend, else (hosts gone from the store) every
    backend of ``kind``, whose tagged resources are then searched for the lease."""
    with db.session() as session:
        try:
            return [lease_hosts(session, hostnames, kind, model).config]
        except OpenStackBackendError:
            return [
                model.model_validate(b.config) for b in session.scalars(select(Backend).where(Backend.kind == kind))
            ]


def bootstrap_for(db: Database, lease: LeaseInfo, backend: str, config: OpenStackBackendConfig) -> AgentBootstrap:
    """A fresh agent-bootstrap token for a machine of this lease (named after the lease; revoked on release)."""
    with db.session() as session:
        _, token = create_api_token(
            session, role=Role.bootstrap, name=f"{BOOTSTRAP_TOKEN_PREFIX}{lease.id}", created_by=f"backend:{backend}"
        )
    return AgentBootstrap(
        controller_url=str(config.controller_url).rstrip("/"),
        bootstrap_token=token,
        ssh_public_keys=tenant_ssh_keys(config, lease),
        ssh_host_key=new_host_key(),  # the machine's host key: its fingerprint is known before the tenant connects
        extra_meta={"gpufabric_tenant": lease.tenant},
    )


def tenant_ssh_keys(config: OpenStackBackendConfig, lease: LeaseInfo) -> list[str]:
    """The SSH public keys a lease's machines authorise: the backend's keys for the tenant, then the lease request's
    own ``ssh_public_keys``."""
    keys = list(config.tenant_ssh_keys.get(lease.tenant, []))
    for key in lease.request.get("ssh_public_keys") or []:
        if isinstance(key, str) and key not in keys:
            keys.append(key)
    return keys


def revoke_bootstrap(db: Database, lease_id: str) -> int:
    """Revoke the lease's bootstrap tokens (its machines are gone, or their agents have registered long ago)."""
    with db.session() as session:
        result = session.execute(
            update(ApiToken)
            .where(
                ApiToken.role == Role.bootstrap.value,
                ApiToken.name == f"{BOOTSTRAP_TOKEN_PREFIX}{lease_id}",
                ApiToken.revoked_at.is_(None),
            )
            .values(revoked_at=datetime.now(UTC))
        )
        return int(getattr(result, "rowcount", 0) or 0)
