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
from controller.backends import eks_checks, eks_sync, openstack_sync
from controller.backends.registry import InvalidBackendConfig, UnknownBackendKind, get_kind, validate_config
from controller.backends.secrets import masked
from controller.observability.redact import redact
from controller.store.db import Database
from controller.store.models import Backend, Host

router = APIRouter(prefix="/v1/backends", tags=["backends"])
ADMIN = Require(Role.admin)


def _config_model(kind: str) -> type[BaseModel] | None:
    try:
        return get_kind(kind).config_model
    except UnknownBackendKind:
        return None


def _shown(config: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    # A kind whose schema refuses unknown fields shows only its fields: a row stored before it did may hold others.
    if model is not None and model.model_config.get("extra") == "forbid":
        config = {k: v for k, v in config.items() if k in model.model_fields}
    shown: dict[str, Any] = masked(config, model)
    return shown


def _out(b: Backend) -> BackendOut:
    # Stored as given (the controller needs the credentials to connect), never shown: controller.backends.secrets.
    model = _config_model(b.kind)
    return BackendOut(name=b.name, kind=b.kind, config=_shown(b.config or {}, model), created_at=b.created_at)


@router.get("", response_model=list[BackendOut])
def list_backends(_: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[BackendOut]:
    with db.session() as session:
        return [_out(b) for b in session.scalars(select(Backend).order_by(Backend.name))]


@router.post("", response_model=BackendOut, status_code=201)
def create_backend(
    body: BackendIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> BackendOut:
    with audit.mutation(db, principal, "backend.create", body.name, {"kind": body.kind}) as (session, _):
        try:
            config = validate_config(body.kind, body.config)
        except (UnknownBackendKind, InvalidBackendConfig) as exc:
            raise Problem(422, "validation-error", str(exc)) from None
        if session.scalar(select(Backend).where(Backend.name == body.name)) is not None:
            raise conflict(f"backend {body.name} already exists")
        row = Backend(name=body.name, kind=body.kind, config=config)
        session.add(row)
        session.flush()
        return _out(row)


@router.get("/{name}", response_model=BackendOut)
def get_backend(name: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> BackendOut:
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise not_found(f"backend {name}")
        return _out(row)


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


def _eks_backend(db: Database, name: str) -> None:
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise not_found(f"backend {name}")
        if row.kind != "eks":
            raise Problem(
                422, "validation-error", f"backend {name} is {row.kind}; checks and sync are for eks backends"
            )


@router.get("/{name}/checks")
def backend_checks(
    name: str,
    pods_per_node: int | None = Query(
        None, ge=1, description="Expected pods per node for the subnet check (default: full nodes, the worst case)"
    ),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """EKS networking findings per nodegroup: pods per node, subnet IP headroom at maxSize, cross-AZ leases."""
    _eks_backend(db, name)
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        assert row is not None
        return eks_checks.backend_checks(session, row, pods_per_node)


def _backend_kind(db: Database, name: str) -> str:
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise not_found(f"backend {name}")
        return row.kind


def _openstack_backend(db: Database, name: str) -> None:
    kind = _backend_kind(db, name)
    if kind not in openstack_sync.KINDS:
        raise Problem(422, "validation-error", f"backend {name} is {kind}; reconcile is for ironic and nova backends")


@router.post("/{name}/sync")
def sync_backend(
    name: str, request: Request, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> dict[str, Any]:
    """Sync a backend now (the backend-sync job does it periodically). EKS: nodes become hosts, headroom,
    leases waiting for a node move onto it and are provisioned again. Ironic / Nova: GPU nodes and compute hosts
    (devices from Placement) become hosts."""
    kind = _backend_kind(db, name)
    if kind in openstack_sync.KINDS:
        result = openstack_sync.sync_backend(db, name, request.app.state.leases)
        with db.session() as session:
            audit.record(
                session, principal, "backend.sync", name, "ok" if not result.errors else "failed",
                {"changed": sorted(set(result.changed))[:50], "errors": redact(result.errors[:10])},
            )  # fmt: skip
        return {"backend": name, "kind": kind, **result.as_dict()}
    _eks_backend(db, name)
    report = eks_sync.run_sync(db, name, request.app.state.leases)
    with db.session() as session:
        audit.record(session, principal, "backend.sync", name, "ok", {"changed": sorted(set(report.changed))[:50]})
    return report.as_dict()


@router.get("/{name}/reconcile")
def get_reconcile_report(name: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> dict[str, Any]:
    """The last reconcile report of an ironic / nova backend: sync, interrupted leases, orphans, missing
    resources, Placement mismatches."""
    _openstack_backend(db, name)
    report = openstack_sync.last_report(db, name)
    if report is None:
        raise not_found(f"reconcile report of backend {name} (none yet: POST to run one)")
    return report


@router.post("/{name}/reconcile")
def run_reconcile(
    name: str, request: Request, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> dict[str, Any]:
    """Reconcile an ironic / nova backend now (the backend-sync job does it every reconcile_interval_s)."""
    _openstack_backend(db, name)
    report = openstack_sync.reconcile_backend(db, name, request.app.state.leases)
    with db.session() as session:
        audit.record(
            session, principal, "backend.reconcile", name, "ok" if not report["errors"] else "failed",
            {
                "orphans": len(report.get("orphans", [])),
                "mismatches": len((report.get("placement") or {}).get("mismatches", [])),
                "interrupted": len(report.get("interrupted", [])),
                "errors": report["errors"][:10],
            },
        )  # fmt: skip
    return report
