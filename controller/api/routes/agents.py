"""The agent protocol (pull): register, report inventory, heartbeat, task results."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, lazyload
from starlette.concurrency import run_in_threadpool

from controller import audit
from controller.api.deps import Require, get_db, get_settings, placement_changed
from controller.api.problems import Problem, not_found
from controller.auth.tokens import Principal, Role, has_live_credential, issue_agent_credential
from controller.fleet.ingest import DeviceConflict, LastSeenBuffer, check_device_ownership, store_inventory
from controller.fleet.replies import AgentReplyCache, ReplyEntry, applied_key
from controller.fleet.states import set_host_status, set_task_status
from controller.observability.metrics import ApiMetrics
from controller.settings import Settings
from controller.store.db import Database
from controller.store.models import AppliedStatus, Backend, Host, HostTask
from drivers.contract.protocol import (
    SUPPORTED_PROTOCOL_VERSIONS,
    AppliedState,
    Heartbeat,
    InventoryReport,
    RegisterRequest,
    RegisterResponse,
    ReportReply,
    Task,
    TaskResult,
    inventory_content_hash,
)

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def _check_protocol(version: str) -> None:
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        raise Problem(
            400,
            "unsupported-protocol",
            f"protocol {version!r} is not supported (supported: {sorted(SUPPORTED_PROTOCOL_VERSIONS)})",
        )


def _host(session: Session, principal: Principal) -> Host:
    # The stored inventory document (kilobytes of JSON) is not needed to answer a report: defer it; nor are the
    # host's backend and pool rows (joined by default, the backend's config included).
    host = session.get(
        Host, principal.host_id, options=[defer(Host.inventory), lazyload(Host.backend), lazyload(Host.pool)]
    )
    if host is None:
        raise not_found(f"host {principal.hostname}")
    return host


def _record_applied(session: Session, host_id: int, applied: AppliedState | None) -> None:
    if applied is None:
        return
    row = session.get(AppliedStatus, host_id)
    if row is None:
        session.add(
            AppliedStatus(
                host_id=host_id, revision=applied.revision, ok=applied.ok, message=applied.message, at=applied.at
            )
        )
    else:
        row.revision, row.ok, row.message, row.at = applied.revision, applied.ok, applied.message, applied.at


def _host_id(principal: Principal) -> int:
    if principal.host_id is None:  # Require(Role.agent) only lets agent credentials through, and they name a host
        raise Problem(403, "forbidden", "this credential is not bound to a host")
    return principal.host_id


def _json(body: bytes) -> Response:
    # The reply is built from cached, already-serialised parts (controller.fleet.replies); returning a model
    # would make FastAPI dump and re-validate it (the declared response_model stays in the OpenAPI document).
    return Response(body, media_type="application/json")


def _entry(request: Request, host_id: int) -> ReplyEntry:
    """This host's reply entry, rebuilt from the store when something changed since (threadpool)."""
    replies: AgentReplyCache = request.app.state.agent_replies
    entry = replies.load(host_id)
    if entry is None:
        raise not_found(f"host id {host_id}")
    return entry


@router.post("/register", response_model=RegisterResponse, status_code=201)
def register(
    body: RegisterRequest,
    principal: Principal = Depends(Require(Role.bootstrap, Role.admin, Role.agent)),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> RegisterResponse:
    """Register a host; returns a credential valid for that host only (shown once).

    Who may register which host (docs/reliability.md): the fleet-wide bootstrap token registers a *new*
    host, or one whose credential an admin reset (``POST /v1/hosts/{host}/credential:reset``); a host whose agent
    holds a live credential is re-registered only with that credential (which rotates it) or by an admin. A
    bootstrap registration of such a host is a takeover attempt: refused with 409 ``host-registered`` and
    audited, nothing changed."""
    _check_protocol(body.protocol_version)
    if principal.role is Role.agent and principal.hostname != body.hostname:
        raise Problem(403, "forbidden", f"this credential is valid for host {principal.hostname} only")
    with audit.mutation(db, principal, "agent.register", body.hostname) as (session, info):
        backend_id = None
        if body.backend:
            backend = session.scalar(select(Backend).where(Backend.name == body.backend))
            if backend is None:
                raise not_found(f"backend {body.backend}")
            backend_id = backend.id
        # Locked: two registrations of one host (a takeover racing a reset) are decided one after the other.
        host = session.scalar(
            select(Host).where(Host.hostname == body.hostname).with_for_update(of=Host, key_share=True)
        )
        info["new"] = host is None
        if host is not None and principal.role is Role.bootstrap and has_live_credential(session, host.id):
            info["refused"] = "takeover"
            raise Problem(
                409,
                "host-registered",
                f"host {body.hostname} is already registered and its agent holds a live credential: the agent "
                "re-registers with that credential, or an admin resets it "
                f"(`gpufabric host reset-credential {body.hostname}`) before a bootstrap registration may take "
                "the host over",
                hostname=body.hostname,
            )
        if host is None:
            host = Host(hostname=body.hostname, backend_id=backend_id, labels=body.labels)
            session.add(host)
            try:
                session.flush()
            except IntegrityError:
                # Another registration created the host first (both saw none): the same rule as a takeover.
                info["refused"] = "concurrent-registration"
                raise Problem(
                    409, "host-registered", f"host {body.hostname} was registered concurrently", hostname=body.hostname
                ) from None
        else:
            if backend_id is not None:
                host.backend_id = backend_id
            host.labels = {**host.labels, **body.labels}
        host.agent_version = body.agent_version
        credential = issue_agent_credential(session, host)
        return RegisterResponse(
            hostname=host.hostname,
            credential=credential,
            generation=host.inventory_generation,
            report_interval_s=settings.report_interval_s,
        )


@router.put("/{host}/inventory", response_model=ReportReply)
async def report_inventory(
    host: str,
    body: InventoryReport,
    request: Request,
    principal: Principal = Depends(Require(Role.agent)),
) -> Response:
    """Store the host's inventory. A generation below the stored one is refused (409); an inventory
    whose content hash equals the stored one only refreshes ``last_seen`` (buffered, no store write)."""
    state = request.app.state
    metrics: ApiMetrics = state.metrics
    _check_protocol(body.protocol_version)
    if body.inventory.host.hostname != host:
        metrics.reports.labels("inventory", "rejected").inc()
        raise Problem(400, "bad-request", f"inventory is for {body.inventory.host.hostname!r}, not {host!r}")
    content_hash = inventory_content_hash(body.inventory)
    replies: AgentReplyCache = state.agent_replies
    host_id = _host_id(principal)
    entry = replies.fresh(host_id)
    if (
        entry is not None
        and content_hash == entry.inventory_hash
        and body.generation >= entry.generation
        and (body.applied is None or applied_key(body.applied) == entry.applied)
        and not state.last_seen.write_through
    ):
        state.last_seen.touch(host_id, datetime.now(UTC), body.generation, revive=entry.needs_status_write)
        replies.note_generation(host_id, body.generation)
        metrics.reports.labels("inventory", "unchanged").inc()
        return _json(entry.reply(state.settings.report_interval_s, generation=body.generation, outcome="unchanged"))
    outcome, stored = await run_in_threadpool(_store_report, request, principal, body, content_hash, entry)
    metrics.reports.labels("inventory", outcome).inc()
    if outcome == "stored" and stored.leased:
        # Leases here may wait for the MIG instances this report brings: bind them now. A host without leases
        # needs nothing more: its commit marked it for the placement index's next sync (the change feed).
        await run_in_threadpool(placement_changed, request, host)
    return _json(stored.reply(state.settings.report_interval_s, outcome=outcome))


def _store_report(
    request: Request, principal: Principal, body: InventoryReport, content_hash: str, before: ReplyEntry | None
) -> tuple[str, ReplyEntry]:
    db: Database = request.app.state.db
    buffer: LastSeenBuffer = request.app.state.last_seen
    now = datetime.now(UTC)
    try:
        try:
            return _store_report_once(request, principal, body, content_hash, db, buffer, now, before)
        except IntegrityError:
            # Two hosts reporting one new GPU UUID at the same moment both pass the ownership check; the unique
            # index refuses the second commit (nothing of this report stored). Name the owner as the check does.
            with db.session() as session:
                row = _host(session, principal)
                check_device_ownership(session, row, body.inventory, {d.uuid for d in row.devices})
            raise
    except DeviceConflict as exc:
        request.app.state.metrics.reports.labels("inventory", "rejected").inc()
        raise Problem(409, "device-conflict", str(exc), uuid=exc.uuid, hosts=exc.hosts) from None


def _store_report_once(
    request: Request,
    principal: Principal,
    body: InventoryReport,
    content_hash: str,
    db: Database,
    buffer: LastSeenBuffer,
    now: datetime,
    before: ReplyEntry | None,
) -> tuple[str, ReplyEntry]:
    db.changes.last_commit_stamp()  # forget an earlier commit's stamp on this thread
    with db.session() as session:
        row = _host(session, principal)
        stored_gen = max(row.inventory_generation, buffer.pending_generation(row.id))
        stored_hash = row.inventory_hash
        if body.generation < stored_gen or (body.generation == stored_gen and content_hash != stored_hash):
            request.app.state.metrics.reports.labels("inventory", "stale").inc()
            raise Problem(
                409,
                "stale-generation",
                f"generation {body.generation} is not newer than the stored {stored_gen}",
                current_generation=stored_gen,
            )
        if content_hash == stored_hash:
            outcome = "unchanged"
            row.inventory_generation = body.generation
        else:
            outcome = "stored"
            store_inventory(row, body.inventory, content_hash, body.generation, now)
        row.last_seen = now
        set_host_status(row, "ready")
        _record_applied(session, row.id, body.applied)
    replies: AgentReplyCache = request.app.state.agent_replies
    entry = replies.after_report(
        before,
        db.changes.last_commit_stamp(),
        inventory_hash=content_hash,
        generation=body.generation,
        applied=body.applied,
    )
    return outcome, entry or _entry(request, _host_id(principal))


@router.post("/{host}/heartbeat", response_model=ReportReply)
async def heartbeat(
    host: str,
    body: Heartbeat,
    request: Request,
    principal: Principal = Depends(Require(Role.agent)),
) -> Response:
    """Mark the host alive and answer with its desired state; ``inventory_wanted`` asks for a report.

    An unchanged heartbeat touches no store: ``last_seen`` goes to the batched :class:`LastSeenBuffer` and the
    reply comes from the host's cached entry (:mod:`controller.fleet.replies`). A host that is not ``ready``
    (marked unreachable) is made ready by the buffer's next flush, in one statement for all such hosts; a new
    applied state is written in the request (threadpool)."""
    _check_protocol(body.protocol_version)
    state = request.app.state
    replies: AgentReplyCache = state.agent_replies
    buffer: LastSeenBuffer = state.last_seen
    host_id = _host_id(principal)
    entry = replies.fresh(host_id)
    if (
        entry is None
        or buffer.write_through
        or (body.applied is not None and applied_key(body.applied) != entry.applied)
    ):
        entry = await run_in_threadpool(_heartbeat_write, request, principal, body)
    else:
        buffer.touch(host_id, datetime.now(UTC), revive=entry.needs_status_write)
    wanted = entry.inventory_hash is None or (
        body.inventory_hash is not None and body.inventory_hash != entry.inventory_hash
    )
    state.metrics.reports.labels("heartbeat", "ok").inc()
    return _json(entry.reply(state.settings.report_interval_s, inventory_wanted=wanted))


def _heartbeat_write(request: Request, principal: Principal, body: Heartbeat) -> ReplyEntry:
    """A heartbeat this replica has no current reply for, or with a new applied state: read the entry (writing
    the applied state first). Liveness still goes through the buffer, and a host that is not ready is made ready
    by its flush, so a whole fleet coming back after an outage costs a write a second, not one per host."""
    db: Database = request.app.state.db
    buffer: LastSeenBuffer = request.app.state.last_seen
    host_id = _host_id(principal)
    now = datetime.now(UTC)
    if buffer.write_through:
        with db.session() as session:
            row = _host(session, principal)
            if row.inventory_hash is not None:
                set_host_status(row, "ready")
            row.last_seen = now
            _record_applied(session, row.id, body.applied)
    elif body.applied is not None:
        with db.session() as session:
            _host(session, principal)  # the host may be gone: 404
            _record_applied(session, host_id, body.applied)
    entry = _entry(request, host_id)
    if not buffer.write_through:
        buffer.touch(host_id, now, revive=entry.needs_status_write)
    if body.applied is not None:
        request.app.state.agent_replies.note_applied(host_id, body.applied)
    return entry


@router.post("/{host}/tasks/{task_id}/result", response_model=Task)
def task_result(
    host: str,
    task_id: str,
    body: TaskResult,
    principal: Principal = Depends(Require(Role.agent)),
    db: Database = Depends(get_db),
) -> Task:
    """Record what the agent did with a task."""
    with audit.mutation(db, principal, "task.result", f"{host}/{task_id}", {"status": body.status}) as (
        session,
        _,
    ):
        task = session.get(HostTask, task_id)
        if task is None or task.host_id != principal.host_id:
            raise not_found(f"task {task_id} on host {host}")
        set_task_status(task, body.status)
        task.message = body.message
        task.output = body.output
        task.updated_at = datetime.now(UTC)
        return Task(
            id=task.id,
            kind=task.kind,
            params=task.params,
            status=task.status,  # type: ignore[arg-type]
            created_at=task.created_at,
        )
