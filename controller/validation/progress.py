"""Moving validations on: ``reconcile`` advances every active validation (agent tasks' results, MPIJob status in
Kubernetes), judges each run against its expected bandwidth and finishes the validation (host labels, gate).
Runs from the scheduler (``controller.validation.jobs``) and after an agent reports a task result; creation is
``controller.validation.service``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller import audit
from controller.backends.contract import ClusterRequestError, NotSupported
from controller.store.db import Database
from controller.store.models import Backend, Host, HostTask
from controller.validation import gate
from controller.validation.models import Validation, ValidationRun
from controller.validation.service import ACTIVE, VALIDATION_LABEL
from controller.validation.states import set_run_status, set_validation_status
from controller.validation.verdict import judge
from drivers.nccl import parse_nccl_output

log = logging.getLogger("gpufabric.validation")

# ``(backend kind, backend name) -> MPIJob runner on that backend's cluster``: the app's backend registry's
# ``nccl_runner`` (``Backend.nccl_runner`` of the kind).
MpiRunnerFactory = Callable[[str, str], Any]


HostsChanged = Callable[[Iterable[str]], Any]


def reconcile(
    db: Database,
    validation_id: str | None = None,
    *,
    mpi_runner: MpiRunnerFactory,
    hosts_changed: HostsChanged | None = None,
) -> list[str]:
    """Advance active validations (or the one given); returns the ids that finished now.

    ``hosts_changed`` (the app's lease service's) is told the hosts each verdict judged, after it is committed, so
    this replica's placement index honours the verdict at once (other replicas: the host change feed)."""
    with db.session() as session:
        stmt = select(Validation.id).where(Validation.status.in_(ACTIVE)).order_by(Validation.created_at)
        if validation_id is not None:
            stmt = stmt.where(Validation.id == validation_id)
        ids = list(session.scalars(stmt))
    finished: list[str] = []
    for vid in ids:
        try:
            judged = _advance(db, vid, mpi_runner)
        except Exception:
            log.exception("could not advance validation %s", vid)
            continue
        if judged is None:
            continue
        finished.append(vid)
        try:
            if hosts_changed is not None and judged:
                hosts_changed(judged)
        except Exception:
            log.exception("validation %s: could not reload its hosts into the placement index", vid)
    return finished


def _advance(db: Database, validation_id: str, mpi_runner: MpiRunnerFactory) -> list[str] | None:
    """One validation forward; the names of the hosts its verdict judged if it finished now, else ``None``."""
    with db.session() as session:
        # Row lock on PostgreSQL: two replicas never judge the same validation twice (SQLite serialises writers).
        validation = session.scalar(
            select(Validation)
            .where(Validation.id == validation_id)
            .with_for_update()
            .options(selectinload(Validation.runs))
        )
        if validation is None or validation.status not in ACTIVE:
            return None
        if validation.runner == "agents":
            _advance_tasks(session, validation)
        else:
            _advance_cluster(session, validation, mpi_runner)
        if not all(run.status in ("succeeded", "failed") for run in validation.runs):
            return None
        judged = [host.hostname for host, _state in _finalize(session, validation)]
    return judged


def _now() -> datetime:
    return datetime.now(UTC)


def _mark_running(validation: Validation) -> None:
    if validation.status == "pending":
        set_validation_status(validation, "running")
        validation.started_at = _now()


def _advance_tasks(session: Session, validation: Validation) -> None:
    for run in validation.runs:
        if run.status in ("succeeded", "failed") or run.task_id is None:
            continue
        task = session.get(HostTask, run.task_id)
        if task is None:
            set_run_status(run, "failed")
            run.message = "the task was deleted (host forgotten?)"
            _mark_running(validation)
            continue
        if task.status == "pending":
            continue
        _mark_running(validation)
        if task.status == "running":
            set_run_status(run, "running")
            continue
        output = task.output or {}
        set_run_status(run, "succeeded" if task.status == "succeeded" else "failed")
        run.message = task.message
        run.command = list(output.get("command") or [])
        run.log = output.get("log")
        failure = None if task.status == "succeeded" else (output.get("error") or task.message or task.status)
        _judge_run(run, failure)
        run.updated_at = _now()


def _judge_run(run: ValidationRun, failure: str | None) -> None:
    result = parse_nccl_output(run.log) if run.log and run.log.strip() else None
    if result is not None and not result.rows and not result.errors:
        result = None  # not an nccl-tests log at all (a shell error, an empty table): cannot judge
    run.result = result.model_dump(mode="json") if result is not None else None
    expected = run.expected or {}
    run.verdict = judge(
        result,
        expected.get("busbw_gbps"),
        float(expected.get("pass_ratio") or gate.DEFAULT_PASS_RATIO),
        expected_source=str(expected.get("source") or ""),
        run_failed=failure,
    )


def _advance_cluster(session: Session, validation: Validation, mpi_runner: MpiRunnerFactory) -> None:
    from drivers.eks.errors import EksError
    from drivers.eks.mpijob import MpiJobSpec, NcclTestArgs, generate_mpijob

    backend = session.scalar(select(Backend).where(Backend.name == validation.request.get("backend")))
    run = validation.runs[0]
    if backend is None:
        set_run_status(run, "failed")
        run.message = "the backend was deleted"
        return
    request = validation.request
    namespace, name = run.job_namespace or "default", run.job_name or ""
    try:
        runner = mpi_runner(backend.kind, backend.name)
    except (ClusterRequestError, NotSupported) as exc:
        set_run_status(run, "failed")
        run.message = str(exc)
        return
    try:
        if run.status == "pending":
            spec = MpiJobSpec(
                name=name,
                namespace=namespace,
                instance_type=request["instance_type"],
                nodes=int(request["nodes"]),
                nodegroup=request.get("nodegroup"),
                gpus_per_node=request.get("gpus_per_node"),
                labels={"gpufabric.io/validation": validation.id},
                nccl=NcclTestArgs(
                    test=request.get("test", "all_reduce_perf"),
                    min_bytes=request.get("min_bytes", "8"),
                    max_bytes=request.get("max_bytes", "128M"),
                    step_factor=request.get("step_factor", 2),
                    iters=request.get("iters", 20),
                    warmup_iters=request.get("warmup_iters", 5),
                ),
                **({"image": request["image"]} if request.get("image") else {}),
            )
            doc = generate_mpijob(spec)
            run.command = list(doc["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["args"])
            try:
                runner.create(doc)
            except EksError as exc:
                if getattr(exc, "status", 0) != 409:  # already created by an earlier, interrupted pass
                    raise
            set_run_status(run, "running")
            _mark_running(validation)
            return
        status = runner.status(namespace, name)
        _mark_running(validation)
        if status.phase not in ("Succeeded", "Failed"):
            return
        try:
            run.log = runner.launcher_log(namespace, name)
        except EksError as exc:
            run.log = None
            run.message = f"launcher log unavailable: {exc}"
        failure = None if status.phase == "Succeeded" else f"MPIJob failed: {status.message or 'no reason given'}"
        set_run_status(run, "succeeded" if status.phase == "Succeeded" else "failed")
        run.message = run.message or status.message
        _narrow_to_workers(run, runner, namespace, name)
        _judge_run(run, failure)
        try:
            runner.delete(namespace, name)
        except EksError as exc:
            log.warning("could not delete MPIJob %s/%s: %s", namespace, name, exc)
    except EksError as exc:
        if run.status == "pending":
            set_run_status(run, "failed")
            run.message = f"could not create the MPIJob: {exc}"
            run.verdict = judge(None, None, gate.DEFAULT_PASS_RATIO, run_failed=run.message)
        else:
            log.warning("validation %s: %s (will retry)", validation.id, exc)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    run.updated_at = _now()


def _narrow_to_workers(run: ValidationRun, runner: Any, namespace: str, name: str) -> None:
    """A nodegroup's verdict is about the nodes its workers ran on, not every node of the nodegroup: the run's
    hosts become those (read before the MPIJob and its pods are deleted). Unknown: no host's state changes."""
    from drivers.eks.errors import EksError

    try:
        ran = set(runner.worker_nodes(namespace, name))
    except EksError as exc:
        ran, why = set(), f"worker pods unreadable: {exc}"
    else:
        why = "no worker pod names its node"
    planned = list(run.hosts or [])
    run.hosts = sorted(ran)
    if not ran:
        note = f"{why}: the verdict is recorded but no host's validation state changes"
        run.message = f"{run.message}; {note}" if run.message else note
    elif set(planned) - ran:
        log.info("validation run %s ran on %s of nodegroup hosts %s", run.job_name, sorted(ran), planned)


def _finalize(session: Session, validation: Validation) -> list[tuple[Host, str]]:
    outcomes = [(run, (run.verdict or {}).get("passed")) for run in validation.runs]
    if any(passed is False for _, passed in outcomes):
        set_validation_status(validation, "failed")
    elif any(passed is None for _, passed in outcomes):
        set_validation_status(validation, "error")
    else:
        set_validation_status(validation, "passed")
    validation.finished_at = _now()
    validation.started_at = validation.started_at or validation.finished_at
    reasons = [
        f"{','.join(run.hosts) or run.launcher}: {r}"
        for run, _ in outcomes
        for r in (run.verdict or {}).get("reasons", [])
    ]
    validation.message = "; ".join(reasons) if reasons else "all runs reached the expected bandwidth with no wrong data"
    validation.verdict = _summary(validation)
    notify: list[tuple[Host, str]] = []
    for run, passed in outcomes:
        if passed is None:
            continue
        for name in run.hosts:
            host = session.scalar(select(Host).where(Host.hostname == name))
            if host is None:
                continue
            evidence = {**(run.verdict or {}), "validation_id": validation.id, "test": validation.request.get("test")}
            state = gate.record_verdict(session, host, bool(passed), validation.id, evidence)
            labels = dict(host.labels or {})
            labels[VALIDATION_LABEL] = gate.engine_validation(state)
            host.labels = labels
            notify.append((host, state))
    audit.record(
        session,
        None,
        "validation.verdict",
        validation.id,
        "ok",
        {"status": validation.status, "hosts": validation.hosts, "message": validation.message[:500]},
    )
    return notify


def _summary(validation: Validation) -> dict[str, Any]:
    runs = [run.verdict or {} for run in validation.runs]
    measured: list[float] = [float(v["measured_busbw_gbps"]) for v in runs if v.get("measured_busbw_gbps") is not None]
    return {
        "passed": {"passed": True, "failed": False}.get(validation.status),
        "status": validation.status,
        "reasons": [r for v in runs for r in v.get("reasons", [])],
        "min_measured_busbw_gbps": min(measured) if measured else None,
        "runs": len(runs),
    }
