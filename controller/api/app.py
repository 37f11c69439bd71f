"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from controller import __version__
from controller.api.admission import AdmissionMiddleware
from controller.api.deps import declared_roles
from controller.api.docs_pages import install_docs_pages
from controller.api.openapi import build_openapi
from controller.api.problems import install_problem_handlers
from controller.api.routes import agents, audit_log, catalog, devices, hosts, leases, pools, quotas, system, tokens
from controller.api.routes import backends as backend_routes
from controller.auth.cache import AUTH_CACHE, warm_agent_credentials
from controller.auth.external import ExternalIdentity
from controller.backends.registry import BackendRegistry, build_backends
from controller.fleet.ingest import LastSeenBuffer
from controller.fleet.replies import AgentReplyCache
from controller.jobs.hooks import HookRegistry, JobContext
from controller.jobs.scheduler import JobRunner
from controller.leases.access import AccessVault
from controller.leases.liveness import InstanceHeartbeat, LeaseTimeouts
from controller.leases.metrics import LeaseCollector
from controller.leases.service import LeaseService
from controller.observability.metrics import ApiMetrics
from controller.observability.middleware import RequestContextMiddleware
from controller.observability.redact import install_log_redaction
from controller.settings import Settings
from controller.store.db import Database
from controller.store.schema import require_current_schema
from controller.ui import install_ui
from controller.validation import api as validation_api
from controller.validation import wiring as validation_wiring

ROUTERS = [
    system.router,
    tokens.router,
    agents.router,
    backend_routes.router,
    backend_routes.kinds_router,
    pools.router,
    hosts.router,
    devices.router,
    audit_log.router,
    leases.router,
    catalog.router,  # before quotas: /v1/quotas/me is not the tenant "me" for tenants
    quotas.router,
    validation_api.router,
]


def lease_timeouts(settings: Settings) -> LeaseTimeouts:
    return LeaseTimeouts(
        placing_s=settings.lease_placing_timeout_s,
        provisioning_s=settings.lease_provisioning_timeout_s,
        releasing_s=settings.lease_releasing_timeout_s,
        instance_timeout_s=settings.instance_timeout_s,
    )


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    hooks: HookRegistry | None = None,
    backends: BackendRegistry | None = None,
) -> FastAPI:
    """Build the app. Raises :class:`controller.store.schema.SchemaError` unless the schema is current.

    ``backends``: the backend kinds the app serves; default: those ``settings.backend_kinds`` names, made now."""
    install_log_redaction()  # secrets never logged, whoever configured logging (controller.observability.redact)
    identity = ExternalIdentity.from_settings(settings)  # OIDC / Keystone sign-in (ValueError if half-configured)
    db = db or Database(settings.database_url, pool_size=settings.db_pool_size, change_poll_s=settings.change_poll_s)
    require_current_schema(db.engine)
    metrics = ApiMetrics(db)
    registry = hooks or HookRegistry()
    backends = backends or build_backends(db, settings.backend_kinds)
    # This replica's placement index, built from the store; see controller.leases.index.
    key = settings.lease_access_key.get_secret_value() if settings.lease_access_key else None
    leases_service = LeaseService(
        db,
        backends=backends,
        owner=settings.instance_id,
        timeouts=lease_timeouts(settings),
        access=AccessVault.from_settings(key, settings.data_dir),
    ).load()
    metrics.registry.register(LeaseCollector(leases_service))
    if "lease-expiry:leases" not in registry.hooks:

        def expire_leases(_ctx: JobContext) -> None:
            leases_service.expire()

        registry.register("lease-expiry", "leases", expire_leases, interval_s=15.0)
    if "lease-recovery:leases" not in registry.hooks:

        def recover_leases(_ctx: JobContext) -> None:
            leases_service.recover()

        registry.register(
            "lease-recovery", "leases", recover_leases, interval_s=settings.lease_recovery_interval_s, at_start=True
        )
    validation_wiring.install(registry, backends, leases_service.hosts_changed)
    backends.install_jobs(registry, leases_service)
    metrics.registry.register(backends.collector())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = None
        # Other replicas take over leases this process drives only once this row goes quiet (a crash).
        heartbeat = InstanceHeartbeat(db, settings.instance_id, settings.instance_heartbeat_s).start()
        if settings.scheduler_enabled:
            runner = JobRunner(
                JobContext(db=db, settings=settings), registry, metrics, on_unreachable=leases_service.hosts_changed
            )
            runner.start()
        app.state.jobs = runner
        # Serving starts at once; a host not yet in the reply cache is built at its first heartbeat.
        app.state.agent_replies.rebuild_in_background("at start-up")
        threading.Thread(
            target=warm_agent_credentials, args=(db, auth_feed), daemon=True, name="gpufabric-warm-auth"
        ).start()
        try:
            yield
        finally:
            if runner is not None:
                runner.shutdown()
            heartbeat.stop()
            app.state.last_seen.close()  # write buffered heartbeat times (controller.fleet.ingest)

    app = FastAPI(
        title="gpufabric controller",
        version=__version__,
        description="One GPU fabric over OpenStack and AWS EKS. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        # FastAPI's pages load their scripts from a CDN; ours come from the controller (docs_pages).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = metrics
    app.state.hooks = registry
    app.state.backends = backends
    app.state.leases = leases_service
    app.state.identity = identity
    app.state.last_seen = LastSeenBuffer(db, settings.last_seen_flush_s)
    app.state.agent_replies = AgentReplyCache(db)
    AUTH_CACHE.ttl_s = settings.auth_cache_ttl_s
    AUTH_CACHE.agent_ttl_s = settings.agent_auth_cache_ttl_s
    # Every replica drops a host's cached agent credentials when the host changes (re-registration rotates
    # the credential and stamps the host; a deleted host is announced too): see controller.store.changes.
    auth_feed = AUTH_CACHE.change_listener(since=db.changes.clock())
    db.changes.subscribe(auth_feed, credentials=True)
    app.state.auth_feed = auth_feed
    app.state.jobs = None
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs_pages(app)
    install_ui(app)  # the dashboard at /ui (controller/ui, docs/dashboard.md)
    _check_every_route_declares_roles(app)
    app.add_middleware(
        AdmissionMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_request_body_bytes,
        agent_max_in_flight=settings.agent_max_in_flight,
        retry_after_s=settings.agent_retry_after_s,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: shed requests get ids and metrics
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def api_routes() -> list[APIRoute]:
    """Every API route (FastAPI keeps included routers nested, so walk ours rather than app.routes)."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def _check_every_route_declares_roles(app: FastAPI) -> None:
    for route in api_routes():
        if route.path.startswith("/v1") and declared_roles(route) is None:
            raise RuntimeError(f"route {route.methods} {route.path} declares no role (use Depends(Require(...)))")


def _openapi(app: FastAPI) -> dict[str, Any]:
    return build_openapi(app, api_routes())
