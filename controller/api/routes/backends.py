"""Admin: backends."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select

from controller import audit
from controller.api.deps import Require, get_db
from controller.api.problems import Problem, conflict, not_found
from controller.api.schemas import BackendIn, BackendOut
from controller.auth.tokens import Principal, Role
from controller.backends.contract import Backend as BackendKind
from controller.backends.registry import BackendRegistry, InvalidBackendConfig, UnknownBackendKind
from controller.backends.secrets import masked
from controller.store.db import Database
from controller.store.models import Backend, Host

router = APIRouter(prefix="/v1/backends", tags=["backends"])
ADMIN = Require(Role.admin)


def get_backends(request: Request) -> BackendRegistry:
    backends: BackendRegistry = request.app.state.backends
    return backends


def _config_model(backends: BackendRegistry, kind: str) -> type[BaseModel] | None:
    try:
        return backends.get(kind).config_model
    except UnknownBackendKind:
        return None


def _shown(config: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    # A kind whose schema refuses unknown fields shows only its fields: a row stored before it did may hold others.
    if model is not None and model.model_config.get("extra") == "forbid":
        config = {k: v for k, v in config.items() if k in model.model_fields}
    shown: dict[str, Any] = masked(config, model)
    return shown


def _out(b: Backend, backends: BackendRegistry) -> BackendOut:
    # Stored as given (the controller needs the credentials to connect), never shown: controller.backends.secrets.
    model = _config_model(backends, b.kind)
    return BackendOut(name=b.name, kind=b.kind, config=_shown(b.config or {}, model), created_at=b.created_at)


@router.get("", response_model=list[BackendOut])
def list_backends(
    _: Principal = Depends(ADMIN), db: Database = Depends(get_db), backends: BackendRegistry = Depends(get_backends)
) -> list[BackendOut]:
    with db.session() as session:
        return [_out(b, backends) for b in session.scalars(select(Backend).order_by(Backend.name))]


@router.post("", response_model=BackendOut, status_code=201)
def create_backend(
    body: BackendIn,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> BackendOut:
    with audit.mutation(db, principal, "backend.create", body.name, {"kind": body.kind}) as (session, _):
        try:
            config = backends.validate_config(body.kind, body.config)
        except (UnknownBackendKind, InvalidBackendConfig) as exc:
            raise Problem(422, "validation-error", str(exc)) from None
        if session.scalar(select(Backend).where(Backend.name == body.name)) is not None:
            raise conflict(f"backend {body.name} already exists")
        row = Backend(name=body.name, kind=body.kind, config=config)
        session.add(row)
        session.flush()
        return _out(row, backends)


@router.get("/{name}", response_model=BackendOut)
def get_backend(
    name: str,
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> BackendOut:
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise not_found(f"backend {name}")
        return _out(row, backends)


@router.delete("/{name}", status_code=204)
def delete_backend(name: str, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> Response:
    with audit.mutation(db, principal, "backend.delete", name) as (session, _):
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise not_found(f"backend {name}")
        if session.scalar(select(Host.id).where(Host.backend_id == row.id).limit(1)) is not None:
            raise conflict(f"backend {name} still has hosts")
        session.delete(row)
    return Response(status_code=204)


def _kind_of(db: Database, backends: BackendRegistry, name: str) -> BackendKind:
    """The kind serving backend ``name`` (404 when there is no such backend)."""
    with db.session() as session:
        kind = session.scalar(select(Backend.kind).where(Backend.name == name))
    if kind is None:
        raise not_found(f"backend {name}")
    try:
        return backends.get(kind)
    except UnknownBackendKind as exc:
        raise Problem(422, "not-supported", str(exc)) from None


@router.get("/{name}/checks")
def backend_checks(
    name: str,
    pods_per_node: int | None = Query(
        None, ge=1, description="Expected pods per node for the subnet check (default: full nodes, the worst case)"
    ),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> dict[str, Any]:
    """The backend's own health findings. EKS: networking per nodegroup (pods per node, subnet IP headroom at
    maxSize, cross-AZ leases). A kind without checks answers 422 ``not-supported`` with the reason."""
    return _kind_of(db, backends, name).checks(name, {"pods_per_node": pods_per_node})


@router.post("/{name}/sync")
def sync_backend(
    name: str,
    request: Request,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> dict[str, Any]:
    """Sync a backend now (the backend-sync job does it periodically). EKS: nodes become hosts, headroom,
    leases waiting for a node move onto it and are provisioned again. Ironic / Nova: GPU nodes and compute hosts
    (devices from Placement) become hosts. A kind with nothing to discover answers 422 ``not-supported``."""
    outcome = _kind_of(db, backends, name).sync(name, request.app.state.leases)
    with db.session() as session:
        audit.record(session, principal, "backend.sync", name, "ok" if outcome.ok else "failed", outcome.audit)
    return outcome.report


@router.get("/{name}/reconcile")
def get_reconcile_report(
    name: str,
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> dict[str, Any]:
    """The last reconcile report of a backend (ironic / nova: sync, interrupted leases, orphans, missing
    resources, Placement mismatches)."""
    report = _kind_of(db, backends, name).last_reconcile(name)
    if report is None:
        raise not_found(f"reconcile report of backend {name} (none yet: POST to run one)")
    return report


@router.post("/{name}/reconcile")
def run_reconcile(
    name: str,
    request: Request,
    principal: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
    backends: BackendRegistry = Depends(get_backends),
) -> dict[str, Any]:
    """Reconcile a backend now (ironic / nova: the backend-sync job does it every reconcile_interval_s)."""
    outcome = _kind_of(db, backends, name).reconcile(name, request.app.state.leases)
    with db.session() as session:
        audit.record(session, principal, "backend.reconcile", name, "ok" if outcome.ok else "failed", outcome.audit)
    return outcome.report


kinds_router = APIRouter(prefix="/v1/backend-kinds", tags=["backends"])


@kinds_router.get("")
def list_backend_kinds(
    _: Principal = Depends(ADMIN), backends: BackendRegistry = Depends(get_backends)
) -> list[dict[str, Any]]:
    """The backend kinds this controller serves: what each hands out and does not, with the reasons, and the JSON
    schema its ``config`` must satisfy."""
    return [
        {
            "kind": b.kind,
            "description": b.description,
            "capabilities": b.capabilities.as_dict(),
            "config_schema": b.config_model.model_json_schema(),
        }
        for b in backends
    ]
