"""Admin: hosts, their pool, desired MIG/sharing, drain/quarantine, tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, selectinload

from controller import audit
from controller.api.admin_state import add_admin_state_routes
from controller.api.deps import Require, get_db, placement_changed
from controller.api.desired_checks import check_documents, check_mig_on_gpus, gpus_of
from controller.api.problems import not_found
from controller.api.schemas import AdminStateIn, DesiredIn, HostDetail, HostOut, HostPoolIn, TaskIn, TaskOut
from controller.api.views import host_detail, host_out, task_out
from controller.auth.tokens import Principal, Role, revoke_agent_credentials
from controller.bounds import MAX_OFFSET
from controller.fleet.states import AdminState, set_host_admin_state, set_task_status
from controller.leases.fleet import stored_models_matching
from controller.store.db import Database
from controller.store.models import Backend, DesiredOverride, Device, Host, HostTask, Pool

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])
ADMIN = Require(Role.admin)


def get_host(session: Session, hostname: str) -> Host:
    host = session.scalar(
        select(Host)
        .where(Host.hostname == hostname)
        .options(selectinload(Host.devices).selectinload(Device.mig_instances))
    )
    if host is None:
        raise not_found(f"host {hostname}")
    return host


def filter_hosts(
    stmt: Select[Host],
    backend: str | None,
    pool: str | None,
    state: str | None,
    health: str | None,
) -> Select[Host]:
    if backend:
        stmt = stmt.where(Host.backend_id.in_(select(Backend.id).where(Backend.name == backend)))
    if pool:
        stmt = stmt.where(Host.pool_id.in_(select(Pool.id).where(Pool.name == pool)))
    if state:
        stmt = stmt.where(or_(Host.status == state, Host.admin_state == state))
    if health:
        stmt = stmt.where(Host.health == health)
    return stmt


@router.get("", response_model=list[HostOut])
def list_hosts(
    backend: str | None = None,
    pool: str | None = None,
    state: str | None = Query(None, description="registered|ready|unreachable or active|drained|quarantined"),
    health: str | None = None,
    model: str | None = Query(
        None,
        max_length=128,
        description='Hosts with at least one GPU of this model: the NVML name, the short name ("H100-80GB") or the '
        'family ("H100")',
    ),
    limit: int = Query(500, ge=1, le=10000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> list[HostOut]:
    stmt = filter_hosts(select(Host), backend, pool, state, health)
    if model:
        with db.session() as session:
            names = stored_models_matching(session, model)
        stmt = stmt.where(Host.id.in_(select(Device.host_id).where(Device.model.in_(names))))
    stmt = stmt.order_by(Host.hostname).limit(limit).offset(offset).options(selectinload(Host.devices))
    with db.session() as session:
        return [host_out(h) for h in session.scalars(stmt).unique()]


@router.get("/{host}", response_model=HostDetail)
def show_host(host: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> HostDetail:
    with db.session() as session:
        return host_detail(session, get_host(session, host))


@router.delete("/{host}", status_code=204)
def forget_host(
    host: str, request: Request, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> Response:
    """Forget a host (its agent must register again)."""
    with audit.mutation(db, principal, "host.delete", host) as (session, _):
        session.delete(get_host(session, host))
    placement_changed(request, host)
    return Response(status_code=204)


@router.put("/{host}/pool", response_model=HostDetail)
def assign_pool(
    host: str,
    body: HostPoolIn,
    request: Request,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> HostDetail:
    with audit.mutation(db, principal, "host.assign-pool", host, {"pool": body.pool}) as (session, _):
        row = get_host(session, host)
        if body.pool is None:
            row.pool = None
        else:
            pool = session.scalar(select(Pool).where(Pool.name == body.pool))
            if pool is None:
                raise not_found(f"pool {body.pool}")
            row.pool = pool
        session.flush()
        detail = host_detail(session, row)
    placement_changed(request, host)
    return detail


@router.put("/{host}/desired", response_model=HostDetail)
def set_desired(
    host: str, body: DesiredIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> HostDetail:
    """Set this host's MIG layout and/or sharing config (overrides the pool's); null clears an override.

    Both documents are validated with the models the agent parses them with, and the selected MIG config
    against the host's GPU models (catalog): a refusal is 422 naming the field, and nothing is stored.
    """
    check_documents(body.mig, body.sharing, ("body",))
    changes = body.model_dump(mode="json", exclude_unset=True)
    summary = {
        "mig_selected": body.mig.selected if body.mig else None,
        "fields": sorted(changes),
    }
    with audit.mutation(db, principal, "host.set-desired", host, summary) as (session, _):
        row = get_host(session, host)
        if body.mig is not None:
            check_mig_on_gpus(body.mig, gpus_of(session, [row.id]), ("body",))
        override = session.get(DesiredOverride, row.id)
        if override is None:
            override = DesiredOverride(host_id=row.id)
            session.add(override)
        if "mig" in changes:
            override.mig = changes["mig"]
        if "sharing" in changes:
            override.sharing = changes["sharing"]
        override.updated_at = datetime.now(UTC)
        session.flush()
        return host_detail(session, row)


def set_admin_state(
    request: Request, db: Database, principal: Principal, host: str, state: AdminState, reason: str
) -> HostDetail:
    action = {"active": "host.undrain", "drained": "host.drain", "quarantined": "host.quarantine"}[state]
    with audit.mutation(db, principal, action, host, {"reason": reason}) as (session, _):
        row = get_host(session, host)
        set_host_admin_state(row, state)
        detail = host_detail(session, row)
    placement_changed(request, host)
    return detail


add_admin_state_routes(
    router,
    param="host",
    noun="host",
    response_model=HostDetail,
    set_state=set_admin_state,
    docs={
        "drain": "No new placements on this host; existing ones stay.",
        "undrain": "Return a drained or quarantined host to service.",
        "quarantine": "Take the host out of service as faulty (e.g. a failed NCCL validation).",
    },
)


@router.get("/{host}/tasks", response_model=list[TaskOut])
def list_tasks(host: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[TaskOut]:
    with db.session() as session:
        row = get_host(session, host)
        tasks = session.scalars(select(HostTask).where(HostTask.host_id == row.id).order_by(HostTask.created_at))
        return [task_out(t, row.hostname) for t in tasks]


@router.post("/{host}/tasks", response_model=TaskOut, status_code=201)
def create_task(
    host: str, body: TaskIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> TaskOut:
    """Queue a task for the host's agent; it is delivered with the next report reply."""
    with audit.mutation(db, principal, "task.create", host, {"kind": body.kind}) as (session, info):
        row = get_host(session, host)
        task = HostTask(
            id=str(uuid.uuid4()), host_id=row.id, kind=body.kind, params=body.params, created_by=principal.actor
        )
        session.add(task)
        session.flush()
        info["task_id"] = task.id
        return task_out(task, row.hostname)


@router.post("/{host}/tasks/{task_id}/cancel", response_model=TaskOut)
def cancel_task(
    host: str, task_id: str, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> TaskOut:
    """Stop delivering a pending or running task; the agent's later result for it is refused (409)."""
    with audit.mutation(db, principal, "task.cancel", f"{host}/{task_id}") as (session, _):
        row = get_host(session, host)
        task = session.get(HostTask, task_id)
        if task is None or task.host_id != row.id:
            raise not_found(f"task {task_id} on host {host}")
        set_task_status(task, "cancelled")
        task.message = f"cancelled by {principal.actor}"
        task.updated_at = datetime.now(UTC)
        return task_out(task, row.hostname)


class CredentialReset(BaseModel):
    hostname: str
    revoked: int = Field(description="Live agent credentials of the host revoked by this reset")
    next_registration: str = Field(description="Who may register the host next: the bootstrap token (once) or an admin")


@router.post("/{host}/credential:reset", response_model=CredentialReset)
def reset_credential(
    host: str,
    body: AdminStateIn | None = None,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> CredentialReset:
    """Revoke the host's agent credential (every replica refuses it within ``change_poll_s``) and open the host to
    one registration: the next ``POST /v1/agents/register`` for it with the bootstrap token takes it over (or an
    admin registers it and hands the credential to the agent). For a re-imaged host whose agent lost its
    credential, a moved GPU, or a suspected stolen credential. The host's devices, leases and desired state
    stay."""
    reason = body.reason if body else ""
    with audit.mutation(db, principal, "host.reset-credential", host, {"reason": reason}) as (session, info):
        row = session.scalar(select(Host).where(Host.hostname == host).with_for_update(of=Host, key_share=True))
        if row is None:
            raise not_found(f"host {host}")
        info["revoked"] = revoke_agent_credentials(session, row)
        return CredentialReset(
            hostname=row.hostname,
            revoked=info["revoked"],
            next_registration="the next registration with the agent-bootstrap token, or an admin's",
        )
