"""Reconciliation of an ``ironic`` or ``nova`` backend (``reconcile`` of the kind, its periodic job, and
``POST /v1/backends/{name}/reconcile``): sync, then

- finish or roll back leases left ``provisioning`` (a controller restart mid-deploy, a deploy that outlives the
  request): ``LeaseService.reprovision``, whose backend finds the node / server tagged with the lease;
- report orphans: nodes / servers tagged ``gpufabric_lease`` whose lease is not live; with ``orphans: release`` they
  are undeployed / deleted too;
- report live leases whose node / server is gone;
- the kind's own comparison (Nova: Placement's GPU usage against gpufabric's live claims; nothing is fixed).

The report is stored per backend (``backend_reports``): ``GET /v1/backends/{name}/reconcile`` returns it and the
``gpufabric_openstack_*`` gauges are read from it at scrape time, on every replica.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select

from controller.backends.contract import LeaseDirectory, LeaseHooks
from controller.backends.openstack.common import OpenStackBackendError
from controller.backends.openstack.hosts import Observed, SyncResult, backend_row, write_hosts
from controller.observability.redact import redact
from controller.store.db import Database
from controller.store.models import Backend, BackendReport
from drivers.openstack import OpenStackError, TaggedResource, find_missing, find_orphans

log = logging.getLogger("gpufabric.backends.openstack")


class CloudKind(Protocol):
    """What reconciling needs of an OpenStack kind (``IronicBackend``, ``NovaBackend``)."""

    @property
    def kind(self) -> str: ...

    @property
    def lease_directory(self) -> LeaseDirectory:
        """What the kind may know of leases and claims (the app's, given by ``build_backends``)."""
        ...

    @property
    def resource(self) -> str:
        """The tagged resource's kind: "ironic_node" | "nova_server"."""
        ...

    @property
    def result_items(self) -> tuple[str, str]:
        """Where a ready lease's result lists them, and their id field."""
        ...

    def parse_config(self, raw: dict[str, Any]) -> Any: ...

    def observe(self, config: Any) -> Observed: ...

    def tagged(self, config: Any) -> list[TaggedResource]: ...

    def release_orphan(self, config: Any, resource: TaggedResource) -> None: ...

    def placement_report(self, name: str, seen: Observed) -> dict[str, Any]: ...


def observe(db: Database, cloud: CloudKind, name: str) -> tuple[Any, Observed]:
    """What one pass sees in the cloud (shared by sync and reconcile, so the cloud is listed once)."""
    with db.session() as session:
        config = cloud.parse_config(backend_row(session, name, cloud.kind).config)
    return config, cloud.observe(config)


def sync_backend(db: Database, cloud: CloudKind, name: str, leases: LeaseHooks | None = None) -> SyncResult:
    """Discovery only: the cloud's GPU hosts into the store (and this replica's placement index)."""
    result = SyncResult()
    try:
        _config, seen = observe(db, cloud, name)
    except (OpenStackError, OpenStackBackendError) as exc:
        result.errors.append(f"listing {name}: {exc}")
        return result
    result.skipped = seen.skipped
    write_hosts(db, cloud.lease_directory, name, cloud.kind, seen.docs, result)
    if leases is not None and result.changed:
        leases.hosts_changed(sorted(set(result.changed)))
    return result


def reconcile_backend(db: Database, cloud: CloudKind, name: str, leases: LeaseHooks | None) -> dict[str, Any]:
    """Sync, finish interrupted leases, report (and by policy release) orphans, compare Placement; store the report."""
    started = datetime.now(UTC)
    report: dict[str, Any] = {"backend": name, "at": started.isoformat(), "errors": []}
    sync = SyncResult()
    try:
        config, seen = observe(db, cloud, name)
    except (OpenStackError, OpenStackBackendError) as exc:
        report["errors"].append(f"listing the cloud: {exc}")
        report.update(sync=sync.as_dict(), orphans=[], missing=[], interrupted=[], placement={"checked": False})
        report = redact(report)  # a client library's message may repeat a URL with its password
        _store(db, name, report)
        return report
    kind = cloud.kind
    report["kind"] = kind
    sync.skipped = seen.skipped
    write_hosts(db, cloud.lease_directory, name, kind, seen.docs, sync)
    if leases is not None and sync.changed:
        leases.hosts_changed(sorted(set(sync.changed)))
    report["sync"] = sync.as_dict()

    report["interrupted"] = _finish_interrupted(db, cloud.lease_directory, name, kind, leases)
    tagged = seen.tagged
    if report["interrupted"]:
        # Finishing / rolling back changed what is tagged: look again before judging orphans.
        try:
            tagged = cloud.tagged(config)
        except OpenStackError as exc:
            report["errors"].append(f"listing tagged resources: {exc}")
    report["orphans"] = _orphans(cloud, config, tagged, report["errors"])
    report["missing"] = _missing(name, cloud, tagged)
    report["placement"] = cloud.placement_report(name, seen)
    for orphan in report["orphans"]:
        log.warning("%s: orphan %s (%s)", name, orphan["message"], orphan["action"])
    for mismatch in report["placement"].get("mismatches", []):
        log.warning("%s: Placement mismatch: %s", name, mismatch["message"])
    report = redact(report)  # a client library's message may repeat a URL with its password
    _store(db, name, report)
    return report


def _finish_interrupted(
    db: Database, directory: LeaseDirectory, name: str, kind: str, leases: LeaseHooks | None
) -> list[dict[str, Any]]:
    with db.session() as session:
        backend_id = backend_row(session, name, kind).id
    # Claims come by lease id, so the ids keep that order once their duplicates (one per host) are dropped.
    ids = list(dict.fromkeys(c.lease_id for c in directory.provisioning_claims(backend_id, kind)))
    out = []
    for lease_id in ids:
        entry: dict[str, Any] = {"lease_id": lease_id, "before": "provisioning"}
        if leases is None:
            entry.update(after="provisioning", message="no lease service to provision it again")
        else:
            try:
                leases.reprovision(lease_id)
            except Exception as exc:
                log.exception("lease %s: provisioning again failed", lease_id)
                entry["error"] = str(exc)
            status = directory.lease_status([lease_id]).get(lease_id)
            entry["after"] = status.state if status is not None else "gone"
            entry["message"] = status.reason if status is not None else ""
        out.append(entry)
    return out


def _orphans(cloud: CloudKind, config: Any, tagged: list[TaggedResource], errors: list[str]) -> list[dict[str, Any]]:
    statuses = cloud.lease_directory.lease_status(t.lease_id for t in tagged)
    out = []
    for orphan in find_orphans(tagged, {lease_id: s.state for lease_id, s in statuses.items()}):
        status = statuses.get(orphan.resource.lease_id)
        if status is not None and status.live:
            continue
        r = orphan.resource
        entry = {
            "resource": r.kind,
            "id": r.id,
            "name": r.name,
            "lease_id": r.lease_id,
            "lease_state": orphan.lease_state,
            "state": r.state,
            "maintenance": r.maintenance,
            "message": orphan.message,
            "action": "reported",
        }
        if config.orphans == "release":
            try:
                cloud.release_orphan(config, r)
                entry["action"] = "released"
            except OpenStackError as exc:
                entry["action"] = f"release failed: {exc}"
                errors.append(f"releasing orphan {r.name}: {exc}")
        out.append(entry)
    return out


def _missing(name: str, cloud: CloudKind, tagged: list[TaggedResource]) -> list[dict[str, Any]]:
    items_key, id_key = cloud.result_items
    expected: dict[str, Any] = {}
    for lease in cloud.lease_directory.placed_leases(cloud.kind):
        if lease.state != "ready" or lease.result.get("backend_name") != name:
            continue
        for item in lease.result.get(items_key) or []:
            expected[lease.id] = (cloud.resource, item.get(id_key))
    return [m.model_dump(mode="json") for m in find_missing(tagged, expected)]


def _store(db: Database, name: str, report: dict[str, Any]) -> None:
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None:
            return
        row = session.get(BackendReport, backend.id)
        if row is None:
            row = BackendReport(backend_id=backend.id)
            session.add(row)
        row.report = report
        row.at = datetime.now(UTC)


def last_report(db: Database, name: str) -> dict[str, Any] | None:
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None:
            return None
        row = session.get(BackendReport, backend.id)
        return dict(row.report) if row is not None else None


def reconcile_due(
    db: Database, cloud: CloudKind, leases: LeaseHooks | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Reconcile every backend of ``cloud``'s kind whose last report is older than its ``reconcile_interval_s``."""
    now = now or datetime.now(UTC)
    due = []
    with db.session() as session:
        for backend in session.scalars(select(Backend).where(Backend.kind == cloud.kind).order_by(Backend.name)):
            row = session.get(BackendReport, backend.id)
            interval = float((backend.config or {}).get("reconcile_interval_s", 60.0))
            if row is None or (now - row.at).total_seconds() >= interval:
                due.append(backend.name)
    reports = []
    for name in due:
        try:
            reports.append(reconcile_backend(db, cloud, name, leases))
        except Exception:
            log.exception("reconciling backend %s failed", name)
    return reports
