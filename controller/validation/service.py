"""Create validations: check the request, pick the hosts or the nodegroup, the expected bandwidth, and queue the work
(agent tasks here; an MPIJob on the next reconcile).

Nothing here blocks on a run: ``create_validation`` queues the work and ``controller.validation.progress.reconcile``
moves every active validation forward by looking at what happened (agent task results in the store, MPIJob status
in Kubernetes). ``reconcile`` runs from the scheduler (``controller.validation.jobs``) and whenever a validation is
read, so a validation advances even with the scheduler off.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller import audit
from controller.auth.tokens import Principal
from controller.backends.contract import ClusterRequestError, NotSupported
from controller.backends.registry import BackendRegistry
from controller.store.db import Database
from controller.store.models import Backend, Host, HostTask
from controller.validation import gate
from controller.validation.expected import Expected, network_expected, single_node_expected
from controller.validation.models import Validation, ValidationRun
from controller.validation.schemas import ValidationIn

log = logging.getLogger("gpufabric.validation")

ACTIVE = ("pending", "running")
FINISHED = ("passed", "failed", "error")
TASK_KIND = "nccl-test"
VALIDATION_LABEL = "gpufabric.dev/validation"
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
    backends: BackendRegistry | None = None,
) -> Validation:
    """Queue a validation (agent tasks are created here; an MPIJob on the next reconcile). ``backends`` (the app's
    registry) shapes a nodegroup's validation."""
    validation_id = str(uuid.uuid4())
    request = body.model_dump(mode="json", exclude_none=True)
    if body.nodegroup:
        return _create_cluster(session, body, actor, validation_id, request, purpose, schedule_id, backends)
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


def _create_cluster(
    session: Session,
    body: ValidationIn,
    actor: str,
    validation_id: str,
    request: dict[str, Any],
    purpose: str,
    schedule_id: int | None,
    backends: BackendRegistry | None,
) -> Validation:
    """A nodegroup's validation: the backend kind shapes the job (``Backend.nccl_cluster``); an MPIJob on the next
    reconcile runs it."""
    backend = session.scalar(select(Backend).where(Backend.name == body.backend))
    if backend is None:
        raise ValidationRequestError(f"backend {body.backend} not found", 404)
    if backends is None:
        raise ValidationRequestError("this controller has no backend registry to run a nodegroup validation")
    try:
        shape = backends.get(backend.kind).nccl_cluster(
            backend.name, str(body.nodegroup), body.instance_type, body.nodes
        )
    except NotSupported as exc:
        raise ValidationRequestError(f"backend {backend.name}: {exc}; validate its hosts instead") from None
    except ClusterRequestError as exc:
        raise ValidationRequestError(str(exc), exc.status) from None
    gpus = body.gpus_per_node or shape.gpus_per_node
    if shape.nodes > 1:
        fallback = network_expected(shape.instance_type)
    else:
        fallback = single_node_expected(shape.gpu_model, gpus or 0)
    first = _hosts(session, list(shape.hosts[:1]))
    expected, ratio = _judging(session, body, first[0] if first else None, fallback)
    names = list(shape.hosts)
    validation = Validation(
        id=validation_id,
        status="pending",
        runner=backend.kind,
        mode="multi-node" if shape.nodes > 1 else "single-node",
        purpose=purpose,
        schedule_id=schedule_id,
        request={**request, "instance_type": shape.instance_type, "nodes": shape.nodes},
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


def create_audited(db: Database, principal: Principal | None, body: ValidationIn, **kwargs: Any) -> str:
    """Create a validation in an audited unit of work; returns its id."""
    target = ",".join(body.hosts or []) or f"{body.backend}/{body.nodegroup}"
    actor = principal.actor if principal else "system"
    with audit.mutation(db, principal, "validation.create", target, {"test": body.test}) as (session, info):
        validation = create_validation(session, body, actor, **kwargs)
        info["validation_id"] = validation.id
        return validation.id
