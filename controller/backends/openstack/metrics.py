"""The ``gpufabric_openstack_*`` gauges, read from the stored reconcile reports at scrape time."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import select

from controller.store.db import Database
from controller.store.models import Backend, BackendReport


def report_metrics(db: Database, kind: str) -> list[Metric]:
    """Gauges from the stored reconcile reports of ``kind``'s backends (so every replica exports the leader's
    findings)."""
    mismatch = GaugeMetricFamily(
        "gpufabric_openstack_placement_mismatch",
        "Placement's GPU usage minus gpufabric's live claims, per compute node and resource class (0 = agree; "
        "only differences are exported)",
        labels=["backend", "host", "resource_class", "kind"],
    )
    mismatches = GaugeMetricFamily(
        "gpufabric_openstack_placement_mismatches",
        "Differences between Placement and gpufabric found by the last reconcile",
        labels=["backend"],
    )
    orphans = GaugeMetricFamily(
        "gpufabric_openstack_orphans",
        "Nodes / servers tagged for a lease that is not live, at the last reconcile",
        labels=["backend", "resource", "action"],
    )
    interrupted = GaugeMetricFamily(
        "gpufabric_openstack_interrupted_leases",
        "Leases found provisioning by the last reconcile, by the state they were left in",
        labels=["backend", "state"],
    )
    at = GaugeMetricFamily(
        "gpufabric_openstack_reconcile_timestamp_seconds", "When the last reconcile ran", labels=["backend"]
    )
    with db.session() as session:
        rows = session.execute(
            select(Backend.name, BackendReport.report, BackendReport.at)
            .join(BackendReport, BackendReport.backend_id == Backend.id)
            .where(Backend.kind == kind)
        ).all()
    for name, report, when in rows:
        at.add_metric([name], when.timestamp())
        found = (report.get("placement") or {}).get("mismatches") or []
        mismatches.add_metric([name], len(found))
        for m in found:
            diff = _number(m.get("actual")) - _number(m.get("expected"))
            mismatch.add_metric([name, m.get("host", ""), m.get("resource_class") or "", m.get("kind", "")], diff)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for o in report.get("orphans") or []:
            counts[(o.get("resource", ""), "released" if o.get("action") == "released" else "reported")] += 1
        for (resource, action), n in sorted(counts.items()):
            orphans.add_metric([name, resource, action], n)
        states: dict[str, int] = defaultdict(int)
        for i in report.get("interrupted") or []:
            states[str(i.get("after"))] += 1
        for state, n in sorted(states.items()):
            interrupted.add_metric([name, state], n)
    return [mismatch, mismatches, orphans, interrupted, at]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1.0 if value else 0.0
