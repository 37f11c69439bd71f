"""A host's effective desired state: its own overrides over its pool's policy."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.models import DesiredOverride, Host, HostTask
from drivers.contract.protocol import DesiredState, MigDesired, SharingDesired, Task, desired_state_revision


def effective_desired(session: Session, host: Host) -> DesiredState:
    policy = host.pool.policy if host.pool is not None else {}
    mig_doc = policy.get("mig")
    sharing_doc = policy.get("sharing")
    override = session.get(DesiredOverride, host.id)
    if override is not None:
        if override.mig is not None:
            mig_doc = override.mig
        if override.sharing is not None:
            sharing_doc = override.sharing
    mig = MigDesired.model_validate(mig_doc) if mig_doc else None
    sharing = SharingDesired.model_validate(sharing_doc) if sharing_doc else None
    return DesiredState(revision=desired_state_revision(mig, sharing), mig=mig, sharing=sharing)


def pending_tasks(session: Session, host_id: int) -> list[Task]:
    rows = session.scalars(
        select(HostTask)
        .where(HostTask.host_id == host_id, HostTask.status.in_(("pending", "running")))
        .order_by(HostTask.created_at)
    )
    return [
        Task(id=r.id, kind=r.kind, params=r.params, status=r.status, created_at=r.created_at)  # type: ignore[arg-type]
        for r in rows
    ]
