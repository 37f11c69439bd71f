"""Admin: devices (physical GPUs) with filters; drain / undrain / quarantine one GPU."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from controller import audit
from controller.api.admin_state import add_admin_state_routes
from controller.api.deps import Require, get_db, placement_changed
from controller.api.problems import not_found
from controller.api.schemas import DeviceOut
from controller.api.views import device_out
from controller.auth.tokens import Principal, Role
from controller.bounds import MAX_OFFSET
from controller.fleet.states import AdminState, set_device_admin_state
from controller.leases.fleet import stored_models_matching
from controller.store.db import Database
from controller.store.models import Backend, Device, Host, Pool

router = APIRouter(prefix="/v1/devices", tags=["devices"])
ADMIN = Require(Role.admin)


@router.get("", response_model=list[DeviceOut])
def list_devices(
    backend: str | None = None,
    model: str | None = Query(
        None,
        max_length=128,
        description='GPU model: the NVML name, the short name ("H100-80GB") or the family ("H100")',
    ),
    health: str | None = None,
    pool: str | None = None,
    state: str | None = Query(None, description="Device admin state: active|drained|quarantined"),
    host: str | None = None,
    limit: int = Query(1000, ge=1, le=100000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> list[DeviceOut]:
    stmt = select(Device).join(Host, Host.id == Device.host_id)
    if backend:
        stmt = stmt.where(Host.backend_id.in_(select(Backend.id).where(Backend.name == backend)))
    if pool:
        stmt = stmt.where(Host.pool_id.in_(select(Pool.id).where(Pool.name == pool)))
    if model:
        # The names the lease API accepts: the NVML name, the catalog's short name ("H100-80GB") or its family
        # ("H100"); matched against the few distinct models in the store, then filtered in SQL (paging holds).
        with db.session() as session:
            names = stored_models_matching(session, model)
        stmt = stmt.where(Device.model.in_(names))
    if health:
        stmt = stmt.where(Device.health == health)
    if state:
        stmt = stmt.where(Device.admin_state == state)
    if host:
        stmt = stmt.where(Host.hostname == host)
    stmt = (
        stmt.order_by(Host.hostname, Device.index)
        .limit(limit)
        .offset(offset)
        .options(selectinload(Device.mig_instances), joinedload(Device.host))
    )
    with db.session() as session:
        return [device_out(d, d.host.hostname) for d in session.scalars(stmt).unique()]


def _device(session: Session, uuid: str) -> Device:
    device = session.scalar(select(Device).where(Device.uuid == uuid).options(joinedload(Device.host)))
    if device is None:
        raise not_found(f"device {uuid}")
    return device


@router.get("/{uuid}", response_model=DeviceOut)
def show_device(uuid: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> DeviceOut:
    with db.session() as session:
        device = _device(session, uuid)
        return device_out(device, device.host.hostname)


def _set_state(
    request: Request, db: Database, principal: Principal, uuid: str, state: AdminState, reason: str
) -> DeviceOut:
    action = {"active": "device.undrain", "drained": "device.drain", "quarantined": "device.quarantine"}[state]
    with audit.mutation(db, principal, action, uuid, {"reason": reason}) as (session, _):
        device = _device(session, uuid)
        set_device_admin_state(device, state)
        out = device_out(device, device.host.hostname)
    placement_changed(request, out.host)
    return out


add_admin_state_routes(router, param="uuid", noun="device", response_model=DeviceOut, set_state=_set_state)
