"""Device access on agent-run hosts (static and fake backends): what the host's agent reports it granted a lease.

An agent that enforces leases (``device_access`` on, ``docs/security.md``) reports ``Inventory.device_access``:
per lease the Unix group that may open exactly the leased device nodes. A lease on such a host is ready once the
agent reports its grant (the agent sees the lease in its desired state while it is ``provisioning``); a grant the
agent could not make fails the lease with the agent's reason. A host whose agent does not enforce device access
hands out the devices as before, marked ``enforced: false``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from controller.backends.contract import ProvisionFailed
from controller.store.db import Database
from controller.store.models import Host
from drivers.contract.inventory import DeviceAccess


def reported_access(db: Database, hostnames: Iterable[str]) -> dict[str, DeviceAccess | None]:
    """Host name -> what its agent last reported of device access (None: it does not enforce it)."""
    names = sorted(set(hostnames))
    # Only the inventory's device_access member is read: this runs on every static/fake lease's provisioning, and a
    # whole inventory (every GPU, MIG instance and health reason) is many times its size.
    with db.session() as session:
        rows = session.execute(
            select(Host.hostname, Host.inventory["device_access"]).where(Host.hostname.in_(names))
        ).all()
    out: dict[str, DeviceAccess | None] = dict.fromkeys(names)
    for name, doc in rows:
        if doc is not None:
            try:
                out[name] = DeviceAccess.model_validate(doc)
            except ValidationError:
                out[name] = None
    return out


def host_access(lease_id: str, host: str, cuda_visible_devices: str, access: DeviceAccess | None) -> dict[str, Any]:
    """The lease's access on one host, or ``{"waiting": message}`` until its agent reports the grant."""
    if access is None:
        return {
            "host": host,
            "enforced": False,
            "unix_group": None,
            "device_nodes": [],
            "cuda_visible_devices": cuda_visible_devices,
        }
    if lease_id in access.errors:
        raise ProvisionFailed(f"{host}: the agent could not grant the lease's device access: {access.errors[lease_id]}")
    grant = next((g for g in access.grants if g.lease == lease_id), None)
    if grant is None:
        return {"waiting": f"the agent on {host} to grant the lease's group access to its device nodes"}
    return {
        "host": host,
        "enforced": True,
        "unix_group": grant.unix_group,
        "gid": grant.gid,
        "device_nodes": grant.device_nodes,
        "cuda_visible_devices": cuda_visible_devices,
    }
