"""Create validations, advance them (agent tasks or MPIJobs), judge the runs and record the verdicts.

Nothing here blocks on a run: ``create_validation`` queues the work and ``reconcile`` moves every
active validation forward by looking at what happened (agent task results in the store, MPIJob
status in Kubernetes). ``reconcile`` runs from the scheduler (``controller.validation.jobs``) and
whenever a validation is read, so a validation advances even with the scheduler off.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller import audit
from controller.auth.tokens import Principal
from controller.backends.contract import NotSupported
from controller.store.db import Database
from controller.store.models import Backend, Host, HostTask
from controller.validation import gate
from controller.validation.expected import Expected, network_expected, single_node_expected
from controller.validation.models import Validation, ValidationRun
from controller.validation.schemas import ValidationIn
from controller.validation.states import set_run_status, set_validation_status
from controller.validation.verdict import judge
from drivers.nccl import parse_nccl_output

log = logging.getLogger("gpufabric.validation")

ACTIVE = ("pending", "running")
FINISHED = ("passed", "failed", "error")
TASK_KIND = "nccl-test"
VALIDATION_LABEL = "gpufabric.dev/validation"
NODEGROUP_LABELS = ("eks.amazonaws.com/nodegroup", "alpha.eksctl.io/nodegroup-name")
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
NETWORK_GBPS_LABEL = "gpufabric.dev/network-gbps"
LOG_TAIL_CHARS = 4000


class ValidationRequestError(ValueError):
    """The request names something that does not exist or cannot be validated (``status`` for the API)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# -- creating -------------------------------------------------------------------------------------------


def _hosts(session: Session, names: list[str]) -> list[Host]:
    rows = {
        h.hostname: h
        for h in session.scalars(select(Host).where(Host.hostname.in_(names)).options(selectinload(Host.devices)))
    }
    missing = [n for n in names if n not in rows]
    if missing:
        raise ValidationRequestError(f"unknown host(s): {', '.join(missing)}", 404)
    return [rows[n] for n in names]


def _gpu_count(host: Host) -> int:
    return len(host.devices) or len((host.inventory or {}).get("gpus") or [])


def _gpu_model(host: Host) -> str | None:
    if host.devices:
        return host.devices[0].model
    gpus = (host.inventory or {}).get("gpus") or []
    return str(gpus[0].get("name")) if gpus else None


def _label(host: Host, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = (host.labels or {}).get(key)
        if value:
            return str(value)
    return None


def _network_expected(host: Host) -> Expected:
    gbps = _label(host, (NETWORK_GBPS_LABEL,))
    try:
        network = float(gbps) if gbps else None
    except ValueError:
        network = None
    return network_expected(_label(host, INSTANCE_TYPE_LABELS), network)


def _judging(session: Session, body: ValidationIn, host: Host | None, fallback: Expected) -> tuple[Expected, float]:
    """The expected busbw and pass ratio: the request's override, else the pool's/global policy, else the table."""
    policy = gate.effective_policy(session, host)
    ratio = body.pass_ratio or policy["pass_ratio"] or gate.DEFAULT_PASS_RATIO
    if body.expected_busbw_gbps:
        return Expected(body.expected_busbw_gbps, "override in the validation request"), ratio
    if policy["expected_busbw_gbps"]:
        return Expected(policy["expected_busbw_gbps"], f"policy {policy['scope']}"), ratio
    return fallback, ratio


def _task_params(body: ValidationIn, gpus_per_node: int | None, hosts: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "test": body.test,
        "min_bytes": body.min_bytes,
        "max_bytes": body.max_bytes,
        "step_factor": body.step_factor,
        "iters": body.iters,
        "warmup_iters": body.warmup_iters,
        "timeout_s": body.timeout_s,
    }
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if body.tests_dir:
        params["tests_dir"] = body.tests_dir
    if hosts:
        params["hosts"] = hosts
        if body.mpirun:
            params["mpirun"] = body.mpirun
        if body.mpirun_args:
            params["mpirun_args"] = list(body.mpirun_args)
    return params


def create_validation(
    session: Session,
    body: ValidationIn,
    actor: str,
    *,
    purpose: str = "manual",
    schedule_id: int | None = None,
) -> Validation:
    """Queue a validation (agent tasks are created here; an MPIJob on the next reconcile)."""
    validation_id = str(uuid.uuid4())
    request = body.model_dump(mode="json", exclude_none=True)
    if body.nodegroup:
        return _create_eks(session, body, actor, validation_id, request, purpose, schedule_id)
    names = list(body.hosts or [])
    hosts = _hosts(session, names)
    mode = body.mode or "single-node"
    validation = Validation(
        id=validation_id,
        status="pending",
        runner="agents",
        mode=mode,
        purpose=purpose,
        schedule_id=schedule_id,
        request=request,
        hosts=names,
        created_by=actor,
    )
    session.add(validation)
    if mode == "single-node":
        for host in hosts:
            gpus = body.gpus_per_node or _gpu_count(host) or None
            expected, ratio = _judging(session, body, host, single_node_expected(_gpu_model(host), gpus or 0))
            params = _task_params(body, gpus, None)
            _add_task_run(session, validation, host, [host.hostname], params, expected, ratio, actor)
    else:
        if len(hosts) < 2:
            raise ValidationRequestError("a multi-node validation needs at least two hosts")
        counts = [_gpu_count(h) for h in hosts]
        gpus = body.gpus_per_node or (min(counts) if all(counts) else None)
        if not gpus:
            raise ValidationRequestError("GPU count unknown for some hosts (no inventory yet): pass gpus_per_node")
        candidates = [_network_expected(h) for h in hosts]
        known = [e for e in candidates if e.busbw_gbps is not None]
        fallback = min(known, key=lambda e: e.busbw_gbps or 0.0) if known else candidates[0]
        expected, ratio = _judging(session, body, hosts[0], fallback)
        params = _task_params(body, gpus, names)
        _add_task_run(session, validation, hosts[0], names, params, expected, ratio, actor)
    session.flush()
    return validation


def _add_task_run(
    session: Session,
    validation: Validation,
    launcher: Host,
    hosts: list[str],
    params: dict[str, Any],
    expected: Expected,
    ratio: float,
    actor: str,
) -> None:
    task = HostTask(
        id=str(uuid.uuid4()),
        host_id=launcher.id,
        kind=TASK_KIND,
        params={**params, "validation_id": validation.id},
        created_by=actor,
    )
    session.add(task)
    validation.runs.append(
        ValidationRun(
            hosts=hosts,
            launcher=launcher.hostname,
            task_id=task.id,
            status="pending",
            expected={**expected.as_dict(), "pass_ratio": ratio},
        )
    )


def _create_eks(
    session: Session,
    body: ValidationIn,
    actor: str,
    validation_id: str,
    request: dict[str, Any],
    purpose: str,
    schedule_id: int | None,
) -> Validation:
    backend = session.scalar(select(Backend).where(Backend.name == body.backend))
    if backend is None:
        raise ValidationRequestError(f"backend {body.backend} not found", 404)
    if backend.kind != "eks":
        raise ValidationRequestError(f"backend {body.backend} is {backend.kind}; nodegroups are EKS only")
    nodegroup: dict[str, Any] = next(
        (ng for ng in backend.config.get("nodegroups") or [] if ng.get("name") == body.nodegroup), {}
    )
    instance_type = body.instance_type or next(iter(nodegroup.get("instance_types") or []), None)
    if not instance_type:
        raise ValidationRequestError(f"instance type of nodegroup {body.nodegroup} unknown: pass instance_type")
    nodes = body.nodes or int(nodegroup.get("desired") or 0)
    if nodes < 1:
        raise ValidationRequestError(f"nodegroup {body.nodegroup} has no nodes: pass nodes")
    hosts = [
        h
        for h in session.scalars(select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices)))
        if _label(h, NODEGROUP_LABELS) == body.nodegroup
    ]
    from drivers.eks.catalog import builtin_facts

    facts = builtin_facts(instance_type)
    gpus = body.gpus_per_node or (facts.gpu_count if facts else None)
    if nodes > 1:
        fallback = network_expected(instance_type)
    else:
        fallback = single_node_expected(facts.gpu_model if facts else None, gpus or 0)
    expected, ratio = _judging(session, body, hosts[0] if hosts else None, fallback)
    names = sorted(h.hostname for h in hosts)
    validation = Validation(
        id=validation_id,
        status="pending",
        runner="eks",
        mode="multi-node" if nodes > 1 else "single-node",
        purpose=purpose,
        schedule_id=schedule_id,
        request={**request, "instance_type": instance_type, "nodes": nodes},
        hosts=names,
        created_by=actor,
    )
    validation.runs.append(
        ValidationRun(
            hosts=names,
            launcher=f"{backend.name}/{body.nodegroup}",
            job_name=f"nccl-{validation_id[:8]}",
            job_namespace=body.namespace,
            status="pending",
            expected={**expected.as_dict(), "pass_ratio": ratio},
        )
    )
    session.add(validation)
    session.flush()
    return validation


# -- advancing ------------------------------------------------------------------------------------------


@dataclass
class KubeTarget:
    url: str
    token: str | None = None
    verify_ssl: bool = True
    kind: str = "eks"  # the backend kind whose cluster it is (its NCCL runner: ``Backend.nccl_runner``)


def kube_target(backend: Backend) -> KubeTarget:
    """Where the backend's Kubernetes API is: ``kube_api_url`` (+ ``kube_token``) in its config."""
    config = backend.config or {}
    url = config.get("kube_api_url")
    if not url:
        raise ValidationRequestError(f"backend {backend.name} has no kube_api_url in its config")
    return KubeTarget(str(url), config.get("kube_token"), bool(config.get("kube_verify_ssl", True)), backend.kind)


# The app's is its backend registry's ``nccl_runner`` (the runner of the target's backend kind).
MpiRunnerFactory = Callable[[KubeTarget], Any]


def reconcile(db: Database, validation_id: str | None = None, *, mpi_runner: MpiRunnerFactory) -> list[str]:
    """Advance active validations (or the one given); returns the ids that finished now."""
    with db.session() as session:
        stmt = select(Validation.id).where(Validation.status.in_(ACTIVE)).order_by(Validation.created_at)
        if validation_id is not None:
            stmt = stmt.where(Validation.id == validation_id)
        ids = list(session.scalars(stmt))
    finished: list[str] = []
    for vid in ids:
        try:
            if _advance(db, vid, mpi_runner):
                finished.append(vid)
        except Exception:
            log.exception("could not advance validation %s", vid)
    return finished


def _advance(db: Database, validation_id: str, mpi_runner: MpiRunnerFactory) -> bool:
    notify: list[tuple[Host, str]] = []
    done = False
    with db.session() as session:
        # Row lock on PostgreSQL: two replicas never judge the same validation twice (SQLite serialises writers).
        validation = session.scalar(
            select(Validation)
            .where(Validation.id == validation_id)
            .with_for_update()
            .options(selectinload(Validation.runs))
        )
        if validation is None or validation.status not in ACTIVE:
            return False
        if validation.runner == "agents":
            _advance_tasks(session, validation)
        else:
            _advance_eks(session, validation, mpi_runner)
        if all(run.status in ("succeeded", "failed") for run in validation.runs):
            notify = _finalize(session, validation)
            done = True
    for host, state in notify:
        gate.on_verdict(host, state)
    return done


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


def _advance_eks(session: Session, validation: Validation, mpi_runner: MpiRunnerFactory) -> None:
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
        runner = mpi_runner(kube_target(backend))
    except (ValidationRequestError, NotSupported) as exc:
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


def create_audited(db: Database, principal: Principal | None, body: ValidationIn, **kwargs: Any) -> str:
    """Create a validation in an audited unit of work; returns its id."""
    target = ",".join(body.hosts or []) or f"{body.backend}/{body.nodegroup}"
    actor = principal.actor if principal else "system"
    with audit.mutation(db, principal, "validation.create", target, {"test": body.test}) as (session, info):
        validation = create_validation(session, body, actor, **kwargs)
        info["validation_id"] = validation.id
        return validation.id
