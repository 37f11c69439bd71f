"""What the ``ironic`` and ``nova`` kinds do alike, from what each observes in its cloud: sync, reconcile, the
periodic job that reconciles each backend every ``reconcile_interval_s``, and the report gauges."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from prometheus_client.core import Metric

from controller.backends.contract import BackendBase, LeaseDirectory, LeaseHooks, Outcome
from controller.backends.openstack import reconcile as reconciling
from controller.backends.openstack.common import OpenStackConnections
from controller.backends.openstack.config import OpenStackBackendConfig
from controller.backends.openstack.hosts import Observed
from controller.backends.openstack.metrics import report_metrics
from controller.jobs.hooks import HookRegistry, JobContext
from controller.observability.redact import redact
from controller.store.db import Database
from drivers.openstack import TaggedResource

log = logging.getLogger("gpufabric.backends.openstack")

JOB_INTERVAL_S = 15.0


class OpenStackBackend(BackendBase, ABC):
    """A kind whose hosts come from an OpenStack cloud. A kind adds ``observe``, ``tagged``, ``release_orphan``
    and ``placement_report`` (``controller.backends.openstack.reconcile.CloudKind``) and its provisioning."""

    config_model: ClassVar[type[OpenStackBackendConfig]]
    resource: ClassVar[str]
    result_items: ClassVar[tuple[str, str]]

    def __init__(self, db: Database, connections: OpenStackConnections, lease_directory: LeaseDirectory) -> None:
        self.db = db
        self.connections = connections
        self.lease_directory = lease_directory  # what the kind may know of leases and claims

    def parse_config(self, raw: dict[str, Any]) -> Any:
        return self.config_model.model_validate(raw)

    @abstractmethod
    def observe(self, config: Any) -> Observed:
        """The cloud's GPU hosts as documents, and every resource tagged for a lease."""

    @abstractmethod
    def tagged(self, config: Any) -> list[TaggedResource]: ...

    @abstractmethod
    def release_orphan(self, config: Any, resource: TaggedResource) -> None: ...

    @abstractmethod
    def placement_report(self, name: str, seen: Observed) -> dict[str, Any]: ...

    def sync(self, name: str, leases: LeaseHooks | None) -> Outcome:
        result = reconciling.sync_backend(self.db, self, name, leases)
        return Outcome(
            {"backend": name, "kind": self.kind, **result.as_dict()},
            ok=not result.errors,
            audit={"changed": sorted(set(result.changed))[:50], "errors": redact(result.errors[:10])},
        )

    def reconcile(self, name: str, leases: LeaseHooks | None) -> Outcome:
        report = reconciling.reconcile_backend(self.db, self, name, leases)
        return Outcome(
            report,
            ok=not report["errors"],
            audit={
                "orphans": len(report.get("orphans", [])),
                "mismatches": len((report.get("placement") or {}).get("mismatches", [])),
                "interrupted": len(report.get("interrupted", [])),
                "errors": report["errors"][:10],
            },
        )

    def last_reconcile(self, name: str) -> dict[str, Any] | None:
        return reconciling.last_report(self.db, name)

    def reconcile_due(self, leases: LeaseHooks | None, now: Any = None) -> list[dict[str, Any]]:
        """Reconcile every backend of this kind whose last report is older than its ``reconcile_interval_s``."""
        return reconciling.reconcile_due(self.db, self, leases, now)

    def install_jobs(self, hooks: HookRegistry, leases: LeaseHooks) -> None:
        """The kind's sync + reconcile hook (once per app)."""
        if f"backend-sync:{self.kind}" in hooks.hooks:
            return

        def job(_ctx: JobContext) -> None:
            for report in self.reconcile_due(leases):
                for error in report.get("errors", []):
                    log.warning("%s reconcile %s: %s", self.kind, report["backend"], error)

        hooks.register("backend-sync", self.kind, job, interval_s=JOB_INTERVAL_S)

    def metrics(self) -> list[Metric]:
        return report_metrics(self.db, self.kind)
