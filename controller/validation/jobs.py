"""Periodic validation work on the job scheduler's hook registry (leader replica only).

- ``validation-reconcile``: advance running validations (agent results, MPIJob status).
- ``validation-schedules``: start the validations whose cron expression is due.
- ``validation-burn-in``: hold newly registered hosts and start their burn-in validation.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import exists, func, select
from sqlalchemy.orm import defer

from controller import audit
from controller.backends.registry import BackendRegistry
from controller.jobs.hooks import HookRegistry, JobContext
from controller.store.db import Database
from controller.store.models import Host
from controller.validation import gate, progress, service
from controller.validation.models import HostValidationState, ValidationPolicy, ValidationSchedule
from controller.validation.schemas import ValidationIn

log = logging.getLogger("gpufabric.validation")

RECONCILE_INTERVAL_S = 5.0
SCHEDULE_INTERVAL_S = 30.0
BURN_IN_INTERVAL_S = 15.0


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_trigger(expression: str) -> CronTrigger:
    """A ``CronTrigger`` (UTC) for a five-field crontab expression, with crontab's day-of-week numbers.

    APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0 (and 7): ``0 3 * * 0`` must
    mean Sunday as it does in every crontab, so numeric weekdays are rewritten to names first.
    Raises ValueError for an expression that is not valid.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    fields[4] = re.sub(r"(?<![/\w])([0-7])(?![\w])", lambda m: _DAY_NAMES[int(m.group(1))], fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=UTC)


def next_fire_time(cron: str, after: datetime) -> datetime | None:
    """The first time at or after ``after`` the crontab expression fires (UTC)."""
    fire: datetime | None = cron_trigger(cron).get_next_fire_time(None, after)
    return fire


def fire_due_schedules(db: Database, now: datetime | None = None, backends: BackendRegistry | None = None) -> list[str]:
    """Start a validation for each enabled schedule that fired since it last did; returns their ids (``backends``,
    the app's registry, shapes a schedule's nodegroup validations).

    Missed fire times (controller down) coalesce into one run, as the scheduler's other jobs do.
    """
    now = now or datetime.now(UTC)
    started: list[str] = []
    with db.session() as session:
        schedules = list(session.scalars(select(ValidationSchedule).where(ValidationSchedule.enabled.is_(True))))
    for schedule in schedules:
        # Strictly after the last firing (it fired exactly then), from creation for a new schedule.
        after = schedule.last_fired_at + timedelta(microseconds=1) if schedule.last_fired_at else schedule.created_at
        due = next_fire_time(schedule.cron, after)
        if due is None or due > now:
            continue
        try:
            with db.session() as session:
                row = session.get(ValidationSchedule, schedule.id, with_for_update=True)
                if row is None or (row.last_fired_at is not None and row.last_fired_at >= due):
                    continue  # another replica fired it
                body = ValidationIn.model_validate(row.request)
                validation = service.create_validation(
                    session, body, f"schedule:{row.name}", purpose="scheduled", schedule_id=row.id, backends=backends
                )
                row.last_fired_at = now
                row.last_validation_id = validation.id
                audit.record(
                    session, None, "validation.schedule.fire", row.name, "ok", {"validation_id": validation.id}
                )
                started.append(validation.id)
        except Exception:
            log.exception("schedule %s could not start a validation", schedule.name)
    return started


class BurnInCursor:
    """The newest host change stamp the burn-in tick has looked at (``hosts.change_seq``): each tick looks only at
    hosts changed since (registered, moved to a pool, their pool's policy changed), so it costs O(changes), not
    O(hosts). A fresh cursor (a new leader) starts with one full pass, and so does a change of any validation
    policy's burn-in settings (a ``burn_in_since`` in the past reaches hosts registered before it was set);
    with no policy asking for burn-in it looks at no host at all."""

    def __init__(self) -> None:
        self.seq = -1
        self.policies: tuple[tuple[Any, ...], ...] | None = None


def burn_in_tick(db: Database, cursor: BurnInCursor | None = None) -> list[str]:
    """Hold hosts that need a burn-in and start the burn-in validations that are due; returns started ids."""
    cursor = cursor or BurnInCursor()
    started: list[str] = []
    with db.session() as session:
        newest = session.scalar(select(func.max(Host.change_seq))) or 0
        policies = tuple(
            sorted(
                (scope, burn_in, str(since))
                for scope, burn_in, since in session.execute(
                    select(ValidationPolicy.scope, ValidationPolicy.burn_in, ValidationPolicy.burn_in_since)
                )
            )
        )
        if policies != cursor.policies:
            cursor.seq, cursor.policies = -1, policies
        if any(burn_in for _, burn_in, _ in policies):
            candidates = session.scalars(
                select(Host)
                .options(defer(Host.inventory))
                .where(Host.change_seq > cursor.seq)
                .where(~exists().where(HostValidationState.host_id == Host.id))
                .order_by(Host.id)
            )
            for host in candidates:
                if gate.hold_for_burn_in(session, host):
                    log.info("host %s held until its burn-in validation passes", host.hostname)
    cursor.seq = max(cursor.seq, newest)
    with db.session() as session:
        held = [
            (row[0], row[1])
            for row in session.execute(
                select(Host, HostValidationState)
                .join(HostValidationState, HostValidationState.host_id == Host.id)
                .where(HostValidationState.state == "held", HostValidationState.validation_id.is_(None))
            )
        ]
        for host, state in held:
            policy = gate.effective_policy(session, host)
            if not policy["burn_in_auto_run"] or host.status != "ready":
                continue  # wait for the agent's first inventory: the GPU count sizes the test
            body = ValidationIn.model_validate({**policy["burn_in_request"], "hosts": [host.hostname]})
            validation = service.create_validation(session, body, "burn-in", purpose="burn-in")
            state.validation_id = validation.id
            state.reason = f"burn-in: validation {validation.id} running"
            audit.record(session, None, "validation.burn-in", host.hostname, "ok", {"validation_id": validation.id})
            started.append(validation.id)
    return started


def register_validation_hooks(
    registry: HookRegistry, backends: BackendRegistry, hosts_changed: progress.HostsChanged | None = None
) -> None:
    """The periodic validation jobs; ``backends`` (the app's registry) shapes nodegroup validations and runs their
    MPIJobs (``Backend.nccl_cluster``, ``Backend.nccl_runner``); ``hosts_changed`` hears of each verdict's hosts."""

    def reconcile(ctx: JobContext) -> None:
        progress.reconcile(ctx.db, mpi_runner=backends.nccl_runner, hosts_changed=hosts_changed)

    def schedules(ctx: JobContext) -> None:
        fire_due_schedules(ctx.db, backends=backends)

    registry.register("periodic", "validation-reconcile", reconcile, interval_s=RECONCILE_INTERVAL_S)
    registry.register("periodic", "validation-schedules", schedules, interval_s=SCHEDULE_INTERVAL_S)
    cursor = BurnInCursor()

    def burn_in(ctx: JobContext) -> None:
        burn_in_tick(ctx.db, cursor)

    registry.register("periodic", "validation-burn-in", burn_in, interval_s=BURN_IN_INTERVAL_S)
