"""Reconciliation, as pure functions over what is live in OpenStack and what gpufabric's store says.

- ``find_orphans``: nodes / servers tagged ``gpufabric_lease`` whose lease is not live (released, failed, unknown):
  report, and release if the admin policy says so.
- ``find_missing``: live leases whose node / server is gone.
- ``finish_or_rollback``: a lease interrupted mid-provisioning (controller restart): decide from the resource's state
  whether to finish (node ``active`` with our tag), keep waiting, or roll back (undeploy / delete, then report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from drivers.openstack.errors import OpenStackError, ResourceNotFound
from drivers.openstack.models import TaggedResource
from drivers.openstack.polling import PollPolicy

LeaseState = str  # the controller's lease state names ("provisioning", "ready", "releasing", "failed", ...)
LIVE_LEASE_STATES = frozenset({"pending", "claimed", "provisioning", "ready", "active"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Orphan(_Model):
    resource: TaggedResource
    lease_state: LeaseState | None  # None: the lease is unknown to gpufabric
    message: str


class Missing(_Model):
    lease_id: str
    kind: Literal["ironic_node", "nova_server"]
    expected_id: str | None
    message: str


def find_orphans(tagged: Iterable[TaggedResource], leases: Mapping[str, LeaseState]) -> list[Orphan]:
    """Resources tagged for a lease that is not live. ``leases``: lease id -> state, for every lease the store knows
    (pass at least the live ones; ids not in it count as unknown)."""
    out = []
    for r in tagged:
        state = leases.get(r.lease_id)
        if state in LIVE_LEASE_STATES:
            continue
        why = "unknown to gpufabric" if state is None else f"lease is {state}"
        out.append(
            Orphan(resource=r, lease_state=state, message=f"{r.kind} {r.name} ({r.id}) tagged {r.lease_id}: {why}")
        )
    return sorted(out, key=lambda o: (o.resource.kind, o.resource.name))


def find_missing(
    tagged: Iterable[TaggedResource],
    expected: Mapping[str, tuple[Literal["ironic_node", "nova_server"], str | None]],
) -> list[Missing]:
    """Live leases whose resource is gone. ``expected``: lease id -> (kind, node/server id or None if not yet known).

    A lease with a known id is missing when no tagged resource has that id for it; with no id, when nothing of that
    kind is tagged for it.
    """
    by_lease: dict[str, list[TaggedResource]] = {}
    for r in tagged:
        by_lease.setdefault(r.lease_id, []).append(r)
    out = []
    for lease_id, (kind, rid) in sorted(expected.items()):
        mine = [r for r in by_lease.get(lease_id, []) if r.kind == kind]
        if (rid is not None and all(r.id != rid for r in mine)) or (rid is None and not mine):
            what = f"{kind} {rid}" if rid else f"any {kind}"
            out.append(
                Missing(lease_id=lease_id, kind=kind, expected_id=rid, message=f"lease {lease_id}: {what} is gone")
            )
    return out


Decision = Literal["finish", "wait", "rollback", "nothing"]

IRONIC_IN_PROGRESS = frozenset({"deploying", "wait call-back"})
IRONIC_FAILED = frozenset({"deploy failed", "error"})
NOVA_IN_PROGRESS = frozenset({"BUILD"})


def decide(resource: TaggedResource | None, lease_state: LeaseState) -> Decision:
    """What to do with a lease that was ``provisioning`` when the controller stopped.

    - node ``active`` / server ``ACTIVE`` with our tag -> ``finish`` (mark the lease ready);
    - still deploying / BUILD -> ``wait`` (if the caller's deadline has not passed; else it should roll back);
    - failed, in maintenance, or anything else -> ``rollback`` (undeploy / delete, lease failed);
    - no resource -> ``rollback`` of the lease only (nothing to undo in OpenStack);
    - a lease that is not ``provisioning`` -> ``nothing``.
    """
    if lease_state != "provisioning":
        return "nothing"
    if resource is None:
        return "rollback"
    if resource.kind == "ironic_node":
        if resource.maintenance or resource.state in IRONIC_FAILED:
            return "rollback"
        if resource.state == "active":
            return "finish"
        if resource.state in IRONIC_IN_PROGRESS:
            return "wait"
        return "rollback"
    status = resource.state.upper()
    if status == "ACTIVE":
        return "finish"
    if status in NOVA_IN_PROGRESS:
        return "wait"
    return "rollback"


class Recovery(_Model):
    lease_id: str
    decision: Decision
    resource_id: str | None = None
    rolled_back: bool = False
    message: str


def finish_or_rollback(
    lease_id: str,
    lease_state: LeaseState,
    tagged: Iterable[TaggedResource],
    *,
    ironic: Any | None = None,
    nova: Any | None = None,
    poll: PollPolicy = PollPolicy(interval_s=2.0, timeout_s=900.0),
    wait_is_rollback: bool = False,
) -> Recovery:
    """Finish or roll back one interrupted lease. ``ironic`` / ``nova``: an ``IronicDriver`` / ``NovaDriver`` used
    to undo (undeploy or delete) on rollback. ``wait_is_rollback``: the lease's deadline has passed, so a resource
    still in progress is rolled back too. The caller updates the lease from the returned decision
    (``finish`` -> ready, ``rollback`` -> failed with ``message``; ``wait`` -> check again later)."""
    mine = [r for r in tagged if r.lease_id == lease_id]
    resource = mine[0] if mine else None
    decision = decide(resource, lease_state)
    if decision == "wait" and wait_is_rollback:
        decision = "rollback"
    if resource is None:
        msg = "no tagged node or server found" if decision == "rollback" else f"lease is {lease_state}"
        return Recovery(lease_id=lease_id, decision=decision, message=msg)
    if decision != "rollback":
        return Recovery(
            lease_id=lease_id,
            decision=decision,
            resource_id=resource.id,
            message=f"{resource.kind} {resource.name} is {resource.state}",
        )
    why = f"{resource.kind} {resource.name} was {resource.state}{' (maintenance)' if resource.maintenance else ''}"
    try:
        if resource.kind == "ironic_node":
            if ironic is None:
                raise ValueError("an IronicDriver is needed to roll back an Ironic node")
            ironic.release(resource.id, poll, lease_id=lease_id)
        else:
            if nova is None:
                raise ValueError("a NovaDriver is needed to roll back a Nova server")
            nova.release(resource.id, poll)
    except ResourceNotFound:
        pass
    except OpenStackError as e:
        return Recovery(
            lease_id=lease_id,
            decision="rollback",
            resource_id=resource.id,
            rolled_back=False,
            message=f"{why}; rollback failed: {e}",
        )
    return Recovery(
        lease_id=lease_id, decision="rollback", resource_id=resource.id, rolled_back=True, message=f"{why}; rolled back"
    )
