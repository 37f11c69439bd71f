"""The job scheduler: APScheduler in a background thread, every job gated on leadership."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from controller.jobs.hooks import HookRegistry, JobContext
from controller.jobs.leader import LeaderLeaseKeeper
from controller.jobs.sweeper import sweep_unreachable
from controller.observability.metrics import ApiMetrics

log = logging.getLogger("gpufabric.jobs")


class JobRunner:
    def __init__(
        self,
        ctx: JobContext,
        hooks: HookRegistry,
        metrics: ApiMetrics,
        on_unreachable: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.on_unreachable = on_unreachable
        self.hooks = hooks
        self.metrics = metrics
        settings = ctx.settings
        self.leader = LeaderLeaseKeeper(ctx.db, settings.instance_id, lease_s=settings.leader_lease_s)
        # When this process last became the leader: the sweeper judges no host silent for a time in which this
        # leader was not listening (see sweep).
        self.leader_since: datetime | None = None
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})

    def start(self) -> None:
        settings = self.ctx.settings
        self.scheduler.add_job(self._renew, "interval", seconds=max(1.0, settings.leader_lease_s / 3), id="leader")
        self.scheduler.add_job(self.sweep, "interval", seconds=settings.sweep_interval_s, id="sweeper")
        self._renew()
        now = datetime.now(UTC)
        for key, hook in self.hooks.hooks.items():
            first = now if hook.at_start else now + timedelta(seconds=hook.interval_s)
            self.scheduler.add_job(
                self._guarded(key, hook.run), "interval", seconds=hook.interval_s, id=key, next_run_time=first
            )
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        try:
            self.leader.release()
        except Exception:
            log.exception("could not release the scheduler lease")

    def _renew(self) -> None:
        was = self.leader.is_leader()
        try:
            now = self.leader.try_acquire()
        except Exception:
            log.exception("leader lease renewal failed")
            return
        if now != was:
            log.info("scheduler leadership %s", "acquired" if now else "lost", extra={"holder": self.leader.holder})
            self.leader_since = datetime.now(UTC) if now else None
        if now and not was and self.scheduler.running:
            # A new leader runs its start-up hooks (e.g. lease recovery) at once rather than one interval later.
            for key, hook in self.hooks.hooks.items():
                if hook.at_start:
                    self.scheduler.modify_job(key, next_run_time=datetime.now(UTC))

    def sweep(self, *, now: datetime | None = None) -> list[str]:
        """Mark silent hosts unreachable, once this process has led for a whole ``heartbeat_timeout_s``.

        After a controller outage every host's ``last_seen`` is old although the hosts were fine: the silence was
        the controller's. Marking them at the first sweep would send the whole fleet through unreachable and back
        (placement churn, every reply and credential cache entry dropped) while it reconnects. A new leader
        therefore gives every host one timeout to report first; after a fail-over between live replicas this
        delays noticing a host that really died by at most that much."""
        if not self.leader.is_leader():
            return []
        timeout_s = self.ctx.settings.heartbeat_timeout_s
        now = now or datetime.now(UTC)
        if self.leader_since is None or now - self.leader_since < timedelta(seconds=timeout_s):
            return []
        names = sweep_unreachable(self.ctx.db, timeout_s, now=now)
        self.metrics.hosts_marked_unreachable.inc(len(names))
        if names and self.on_unreachable is not None:
            try:
                self.on_unreachable(names)
            except Exception:
                log.exception("could not update the placement index for unreachable hosts")
        return names

    def _guarded(self, key: str, run: Callable[[JobContext], None]) -> Callable[[], None]:
        def job() -> None:
            if not self.leader.is_leader():
                return
            try:
                run(self.ctx)
            except Exception:
                log.exception("hook %s failed", key)

        return job
