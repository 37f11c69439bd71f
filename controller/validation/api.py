"""``/v1/validations``: run NCCL validations, read verdicts, host validation state, schedules, policies."""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger
from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller import audit
from controller.api.deps import Require, get_db
from controller.api.problems import Problem, not_found
from controller.auth.tokens import Principal, Role
from controller.store.db import Database
from controller.store.models import Host, Pool
from controller.validation import gate, jobs, progress, service
from controller.validation.models import HostValidationState, Validation, ValidationPolicy, ValidationSchedule
from controller.validation.schemas import (
    HostValidationOut,
    PolicyIn,
    PolicyOut,
    RunOut,
    ScheduleIn,
    ScheduleOut,
    ValidationIn,
    ValidationOut,
    ValidationSummary,
)

router = APIRouter(prefix="/v1/validations", tags=["validations"])
ADMIN = Require(Role.admin)


def run_out(run: object) -> RunOut:
    from controller.validation.models import ValidationRun

    assert isinstance(run, ValidationRun)
    result = run.result or {}
    return RunOut(
        id=run.id,
        hosts=list(run.hosts),
        launcher=run.launcher,
        task_id=run.task_id,
        job=f"{run.job_namespace}/{run.job_name}" if run.job_name else None,
        status=run.status,
        message=run.message,
        command=list(run.command or []),
        expected=run.expected,
        verdict=run.verdict,
        rows=list(result.get("rows") or []),
        avg_busbw_gbps=result.get("avg_busbw_gbps"),
        result=run.result,
        log_tail=run.log[-service.LOG_TAIL_CHARS :] if run.log else None,
        updated_at=run.updated_at,
    )


def validation_out(v: Validation) -> ValidationOut:
    return ValidationOut(
        id=v.id,
        status=v.status,  # type: ignore[arg-type]
        runner=v.runner,
        mode=v.mode,  # type: ignore[arg-type]
        purpose=v.purpose,
        request=v.request,
        hosts=list(v.hosts),
        message=v.message,
        verdict=v.verdict,
        runs=[run_out(r) for r in v.runs],
        created_by=v.created_by,
        created_at=v.created_at,
        started_at=v.started_at,
        finished_at=v.finished_at,
    )


def _load(session: Session, validation_id: str) -> Validation:
    v = session.scalar(select(Validation).where(Validation.id == validation_id).options(selectinload(Validation.runs)))
    if v is None:
        raise not_found(f"validation {validation_id}")
    return v


def _mpi_runner(request: Request) -> progress.MpiRunnerFactory:
    # A test may set its own; the app's is its backend registry's (the target backend kind's NCCL runner).
    factory: progress.MpiRunnerFactory | None = getattr(request.app.state, "mpi_runner_factory", None)
    return factory or request.app.state.backends.nccl_runner


def _reconciled(request: Request, db: Database, validation_id: str) -> ValidationOut:
    progress.reconcile(
        db, validation_id, mpi_runner=_mpi_runner(request), hosts_changed=request.app.state.leases.hosts_changed
    )
    with db.session() as session:
        out = validation_out(_load(session, validation_id))
    if out.status not in service.ACTIVE:
        # The verdict and the hosts' gate state were committed together, maybe by the scheduler thread or
        # another replica: reload those hosts into this replica's placement index before answering, so a
        # placement made after this response already honours the verdict.
        request.app.state.leases.hosts_changed(out.hosts)
    return out


@router.post("", response_model=ValidationOut, status_code=201)
def create(
    body: ValidationIn, request: Request, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> ValidationOut:
    """Start a validation on hosts (their agents run nccl-tests) or on an EKS nodegroup (an MPIJob)."""
    try:
        validation_id = service.create_audited(db, principal, body, backends=request.app.state.backends)
    except service.ValidationRequestError as exc:
        raise Problem(exc.status, "not-found" if exc.status == 404 else "validation-error", str(exc)) from None
    return _reconciled(request, db, validation_id)


@router.get("", response_model=list[ValidationSummary])
def list_validations(
    request: Request,
    status: str | None = Query(None, description="pending|running|passed|failed|error"),
    host: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> list[ValidationSummary]:
    progress.reconcile(db, mpi_runner=_mpi_runner(request), hosts_changed=request.app.state.leases.hosts_changed)
    stmt = select(Validation).order_by(Validation.created_at.desc())
    if status:
        stmt = stmt.where(Validation.status == status)
    with db.session() as session:
        rows = [v for v in session.scalars(stmt.limit(limit if not host else 10000)) if not host or host in v.hosts]
        return [
            ValidationSummary(
                id=v.id,
                status=v.status,  # type: ignore[arg-type]
                runner=v.runner,
                mode=v.mode,  # type: ignore[arg-type]
                purpose=v.purpose,
                test=str(v.request.get("test", "all_reduce_perf")),
                hosts=list(v.hosts),
                passed=(v.verdict or {}).get("passed"),
                created_at=v.created_at,
                finished_at=v.finished_at,
            )
            for v in rows[:limit]
        ]


# -- host state ---------------------------------------------------------------------------------------


def host_validation_out(session: Session, host: Host) -> HostValidationOut:
    row = session.get(HostValidationState, host.id)
    state = row.state if row else gate.validation_state_of(session, [host.id])[host.id]
    return HostValidationOut(
        host=host.hostname,
        state=state,  # type: ignore[arg-type]
        placeable=gate.placeable(state) and host.admin_state == "active",
        reason=row.reason if row else ("burn-in pending" if state == "held" else ""),
        validation_id=row.validation_id if row else None,
        evidence=row.evidence if row else {},
        admin_state=host.admin_state,
        updated_at=row.updated_at if row else None,
    )


@router.get("/hosts", response_model=list[HostValidationOut])
def list_host_states(
    state: str | None = Query(None, description="unvalidated|held|validated|quarantined"),
    _: Principal = Depends(ADMIN),
    db: Database = Depends(get_db),
) -> list[HostValidationOut]:
    with db.session() as session:
        out = [host_validation_out(session, h) for h in session.scalars(select(Host).order_by(Host.hostname))]
    return [h for h in out if state is None or h.state == state]


@router.get("/hosts/{host}", response_model=HostValidationOut)
def show_host_state(host: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> HostValidationOut:
    """The host's validation state, the reason and the evidence of the validation that set it."""
    with db.session() as session:
        row = session.scalar(select(Host).where(Host.hostname == host))
        if row is None:
            raise not_found(f"host {host}")
        return host_validation_out(session, row)


# -- schedules ----------------------------------------------------------------------------------------


def cron_trigger(expression: str) -> CronTrigger:
    try:
        return jobs.cron_trigger(expression)
    except ValueError as exc:
        raise Problem(422, "validation-error", f"cron {expression!r}: {exc}") from None


def schedule_out(s: ValidationSchedule) -> ScheduleOut:
    trigger = jobs.cron_trigger(s.cron)
    return ScheduleOut(
        id=s.id,
        name=s.name,
        cron=s.cron,
        request=s.request,
        enabled=s.enabled,
        next_run_at=trigger.get_next_fire_time(None, datetime.now(UTC)) if s.enabled else None,
        last_fired_at=s.last_fired_at,
        last_validation_id=s.last_validation_id,
        created_at=s.created_at,
    )


@router.post("/schedules", response_model=ScheduleOut, status_code=201)
def create_schedule(
    body: ScheduleIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> ScheduleOut:
    """Revalidate on a cron expression (UTC); the scheduler starts the validation when it is due."""
    cron_trigger(body.cron)
    with audit.mutation(db, principal, "validation.schedule.create", body.name, {"cron": body.cron}) as (session, _):
        if session.scalar(select(ValidationSchedule).where(ValidationSchedule.name == body.name)) is not None:
            raise Problem(409, "conflict", f"schedule {body.name} exists")
        row = ValidationSchedule(
            name=body.name,
            cron=body.cron,
            request=body.request.model_dump(mode="json", exclude_none=True),
            enabled=body.enabled,
            created_by=principal.actor,
        )
        session.add(row)
        session.flush()
        return schedule_out(row)


@router.get("/schedules", response_model=list[ScheduleOut])
def list_schedules(_: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> list[ScheduleOut]:
    with db.session() as session:
        return [schedule_out(s) for s in session.scalars(select(ValidationSchedule).order_by(ValidationSchedule.name))]


@router.delete("/schedules/{name}", status_code=204)
def delete_schedule(name: str, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> Response:
    with audit.mutation(db, principal, "validation.schedule.delete", name) as (session, _):
        row = session.scalar(select(ValidationSchedule).where(ValidationSchedule.name == name))
        if row is None:
            raise not_found(f"schedule {name}")
        session.delete(row)
    return Response(status_code=204)


# -- policies -----------------------------------------------------------------------------------------


def policy_out(row: ValidationPolicy) -> PolicyOut:
    return PolicyOut(
        scope=row.scope,
        expected_busbw_gbps=row.expected_busbw_gbps,
        pass_ratio=row.pass_ratio,
        burn_in=row.burn_in,
        burn_in_since=row.burn_in_since,
        burn_in_request=row.burn_in_request,
        burn_in_auto_run=row.burn_in_auto_run,
        updated_at=row.updated_at,
    )


def _check_scope(session: Session, scope: str) -> None:
    if scope == gate.GLOBAL_SCOPE:
        return
    if not scope.startswith("pool:") or session.scalar(select(Pool).where(Pool.name == scope[5:])) is None:
        raise not_found(f"policy scope {scope} (use 'global' or 'pool:<existing pool>')")


@router.get("/policies/{scope}", response_model=PolicyOut)
def show_policy(scope: str, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)) -> PolicyOut:
    with db.session() as session:
        _check_scope(session, scope)
        row = session.get(ValidationPolicy, scope) or ValidationPolicy(
            scope=scope, burn_in_request={}, burn_in_auto_run=True, updated_at=datetime.now(UTC)
        )
        return policy_out(row)


@router.put("/policies/{scope}", response_model=PolicyOut)
def set_policy(
    scope: str, body: PolicyIn, principal: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> PolicyOut:
    """Expected busbw / pass ratio overrides and burn-in for ``global`` or ``pool:<name>``."""
    with audit.mutation(db, principal, "validation.policy.set", scope, body.model_dump(mode="json")) as (session, _):
        _check_scope(session, scope)
        row = session.get(ValidationPolicy, scope)
        if row is None:
            row = ValidationPolicy(scope=scope)
            session.add(row)
        now = datetime.now(UTC)
        if body.burn_in and not row.burn_in:
            row.burn_in_since = now  # only hosts registering from now on are held
        if not body.burn_in:
            row.burn_in_since = None
        row.expected_busbw_gbps = body.expected_busbw_gbps
        row.pass_ratio = body.pass_ratio
        row.burn_in = body.burn_in
        row.burn_in_request = body.burn_in_request.model_dump(mode="json", exclude_none=True)
        row.burn_in_auto_run = body.burn_in_auto_run
        row.revision = (row.revision or 0) + 1
        row.updated_at = now
        session.flush()
        return policy_out(row)


# Declared last: /{validation_id} must not shadow /hosts, /schedules and /policies.
@router.get("/{validation_id}", response_model=ValidationOut)
def show(
    validation_id: str, request: Request, _: Principal = Depends(ADMIN), db: Database = Depends(get_db)
) -> ValidationOut:
    """Status, each run (agent task or MPIJob), the parsed table, average busbw and the verdict with evidence."""
    return _reconciled(request, db, validation_id)
