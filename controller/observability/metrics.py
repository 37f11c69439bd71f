"""Prometheus metrics, in a registry owned by one app (several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from controller.store.db import Database
from controller.store.models import Backend, Device, Host

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class FleetCollector(Collector):
    """Host and GPU counts by backend, model and state, read from the store at scrape time."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        hosts = GaugeMetricFamily(
            "gpufabric_hosts",
            "Hosts by backend, reachability status and admin state",
            labels=["backend", "status", "admin_state"],
        )
        gpus = GaugeMetricFamily(
            "gpufabric_gpus",
            "GPUs by backend, model, health and admin state",
            labels=["backend", "model", "health", "admin_state"],
        )
        backend = aliased(Backend)
        with self._db.session() as session:
            for name, status, admin_state, count in session.execute(
                select(backend.name, Host.status, Host.admin_state, func.count())
                .select_from(Host)
                .outerjoin(backend, backend.id == Host.backend_id)
                .group_by(backend.name, Host.status, Host.admin_state)
            ):
                hosts.add_metric([name or "", status, admin_state], count)
            for name, model, health, admin_state, count in session.execute(
                select(backend.name, Device.model, Device.health, Device.admin_state, func.count())
                .select_from(Device)
                .join(Host, Host.id == Device.host_id)
                .outerjoin(backend, backend.id == Host.backend_id)
                .group_by(backend.name, Device.model, Device.health, Device.admin_state)
            ):
                gpus.add_metric([name or "", model, health, admin_state], count)
        yield hosts
        yield gpus


class ApiMetrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "gpufabric_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reports = Counter(
            "gpufabric_agent_reports",
            "Agent reports by kind (inventory, heartbeat) and outcome (stored, unchanged, stale, rejected)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.hosts_marked_unreachable = Counter(
            "gpufabric_hosts_marked_unreachable", "Hosts the sweeper marked unreachable", registry=self.registry
        )
        self.agent_requests_shed = Counter(
            "gpufabric_agent_requests_shed",
            "Agent requests answered 503 + Retry-After because too many were in flight",
            registry=self.registry,
        )
        self.agent_in_flight = Gauge(
            "gpufabric_agent_requests_in_flight", "Agent requests being handled now", registry=self.registry
        )
        self.requests_too_large = Counter(
            "gpufabric_requests_too_large", "Requests refused 413 for their body size", registry=self.registry
        )
        self.registry.register(FleetCollector(db))
