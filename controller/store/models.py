"""The controller's tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UtcDateTime}


class Backend(Base):
    __tablename__ = "backends"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pool(Base):
    __tablename__ = "pools"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # {"mig": {"config": {...}, "selected": "..."} | null, "sharing": {"config": {...}} | null,
    #  "on_demand_mig": bool}
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(Base):
    __tablename__ = "hosts"
    __table_args__ = (
        Index("ix_hosts_status_last_seen", "status", "last_seen"),
        Index("ix_hosts_change_seq", "change_seq", "id"),  # the change feed's keyset pages
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), unique=True)
    backend_id: Mapped[int | None] = mapped_column(ForeignKey("backends.id", ondelete="SET NULL"), index=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id", ondelete="SET NULL"), index=True)
    # reachability, set by reports and the heartbeat sweeper: registered | ready | unreachable
    status: Mapped[str] = mapped_column(String(16), default="registered", index=True)
    # what an admin decided: active | drained | quarantined
    admin_state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    health: Mapped[str] = mapped_column(String(16), default="unknown")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    simulated: Mapped[bool] = mapped_column(default=False)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None] = mapped_column(index=True)
    inventory_generation: Mapped[int] = mapped_column(Integer, default=0)
    inventory_hash: Mapped[str | None] = mapped_column(String(64))
    inventory: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inventory_at: Mapped[datetime | None] = mapped_column()
    # Bumped with every write that changes what placement may do on this host (claims, releases, admin state,
    # pool policy), so a replica can tell which hosts its in-memory index must reload.
    placement_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The fleet clock's value at this host's last change (controller.store.changes): replicas poll
    # ``change_seq > cursor`` to learn which hosts' desired state, tasks or placement inputs changed.
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The stamp of the last change that matters to the host's agent credentials (a credential issued, reset or
    # revoked; the host renamed): auth caches drop the host's cached credentials for these, not for every change.
    credential_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    backend: Mapped[Backend | None] = relationship(lazy="joined")
    pool: Mapped[Pool | None] = relationship(lazy="joined")
    devices: Mapped[list[Device]] = relationship(
        back_populates="host", cascade="all, delete-orphan", order_by="Device.index"
    )


class Device(Base):
    """A physical GPU. MIG instances are rows of their own so placement can claim them."""

    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    uuid: Mapped[str] = mapped_column(String(96), unique=True)
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128), index=True)
    architecture: Mapped[str] = mapped_column(String(32), default="")
    memory_mib: Mapped[int] = mapped_column(Integer)
    health: Mapped[str] = mapped_column(String(16), default="healthy", index=True)
    admin_state: Mapped[str] = mapped_column(String(16), default="active", index=True)
    mig_mode: Mapped[str] = mapped_column(String(24), default="unsupported")
    pci_bus_id: Mapped[str] = mapped_column(String(32), default="")
    slices: Mapped[list[Any]] = mapped_column(default=list)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    host: Mapped[Host] = relationship(back_populates="devices")
    mig_instances: Mapped[list[MigInstance]] = relationship(
        back_populates="device", cascade="all, delete-orphan", order_by="MigInstance.placement_start"
    )


class MigInstance(Base):
    __tablename__ = "mig_instances"
    __table_args__ = (UniqueConstraint("device_id", "gpu_instance_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    gpu_instance_id: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(String(96))
    profile: Mapped[str] = mapped_column(String(32), index=True)
    profile_id: Mapped[int] = mapped_column(Integer)
    placement_start: Mapped[int] = mapped_column(Integer)
    placement_size: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    sm_count: Mapped[int] = mapped_column(Integer)
    busy: Mapped[bool] = mapped_column(default=False, doc="Processes were running in it at the last report")

    device: Mapped[Device] = relationship(back_populates="mig_instances")


class ApiToken(Base):
    """Admin, tenant and agent-bootstrap tokens. Only sha256(secret) is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(24))
    tenant: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(160), default="")
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class AgentCredential(Base):
    """A credential valid for one host only, issued at registration."""

    __tablename__ = "agent_credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class DesiredOverride(Base):
    """Per-host desired state set by an admin; overrides the pool's policy field by field."""

    __tablename__ = "desired_overrides"
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    mig: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sharing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppliedStatus(Base):
    """What the host's agent last said it applied."""

    __tablename__ = "applied_status"
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool] = mapped_column()
    message: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column()


class HostTask(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_host_status", "host_id", "status"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(160), default="")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(160))
    role: Mapped[str] = mapped_column(String(24))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_id: Mapped[str] = mapped_column(String(64), default="")


class FleetClock(Base):
    """Named monotonic counters; ``hosts`` stamps ``Host.change_seq`` (see controller.store.changes)."""

    __tablename__ = "fleet_clock"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class LeaderLease(Base):
    """One row per singleton role (e.g. the job scheduler); whoever holds an unexpired row leads."""

    __tablename__ = "leader_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(160))
    expires_at: Mapped[datetime] = mapped_column()


# --- leases, claims and quotas (migration 0002) ------------------------------------------------------------


class Lease(Base):
    """A tenant's placed request. ``state`` follows ``controller.leases.state.TRANSITIONS``."""

    __tablename__ = "leases"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key", name="uq_leases_tenant_idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    request_hash: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    backend: Mapped[str] = mapped_column(String(32), default="")
    # Engine allocations (controller.placement.Allocation as dicts); MIG UUIDs are filled in when the agent
    # reports instances created on demand.
    allocations: Mapped[list[Any]] = mapped_column(default=list)
    placement: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The backend's ``access`` (credentials, addresses) while the lease holds, Fernet-encrypted
    # (controller.leases.access); cleared when the lease leaves ready/provisioning.
    access_sealed: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(160), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # While the lease is in a transitional state (placing, provisioning, releasing): the controller instance
    # driving it (None: resting, waiting for something outside) and when the recovery job steps in regardless.
    # See controller.leases.recovery.
    owner: Mapped[str | None] = mapped_column(String(160))
    deadline: Mapped[datetime | None] = mapped_column(index=True)
    recoveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ControllerInstance(Base):
    """One row per running controller process, refreshed every few seconds (``controller.leases.liveness``):
    a lease owned by an instance whose row went quiet was interrupted by a crash."""

    __tablename__ = "controller_instances"
    instance_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class LeaseTransition(Base):
    __tablename__ = "lease_transitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("leases.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SliceClaim(Base):
    """One claimed unit. The partial unique index on (resource, slot) over live rows is what makes a claim
    atomic across controller replicas: a second live row for the same unit cannot be committed.

    ``resource`` is ``gpu:<uuid>`` (slot 0), ``share:<uuid>`` (slot = replica), ``vgpu:<uuid>`` (slot =
    instance) or ``mig:<uuid>`` (slot = memory slice, so overlapping MIG placements conflict too).
    """

    __tablename__ = "slice_claims"
    __table_args__ = (
        Index(
            "uq_slice_claims_live",
            "resource",
            "slot",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
            sqlite_where=text("released_at IS NULL"),
        ),
        Index("ix_slice_claims_host_live", "host_id", "released_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("leases.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(128))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    device_uuid: Mapped[str] = mapped_column(String(96))
    resource: Mapped[str] = mapped_column(String(128))
    slot: Mapped[int] = mapped_column(Integer)
    allocation: Mapped[int] = mapped_column(Integer, doc="Index into Lease.allocations")
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column()
    released_at: Mapped[datetime | None] = mapped_column()


class Quota(Base):
    """A tenant's limit on live units of one slice kind (and optionally one GPU model)."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("tenant", "kind", "model", name="uq_quotas_tenant_kind_model"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128), default="*")
    limit: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- OpenStack reconciliation (migration 0004) ----------------------------------------------------------------


class BackendReport(Base):
    """The last sync/reconcile report of a backend (orphans, Placement mismatches, interrupted leases): what
    ``GET /v1/backends/{name}/reconcile`` returns and what the mismatch gauges are read from, on every replica."""

    __tablename__ = "backend_reports"
    backend_id: Mapped[int] = mapped_column(ForeignKey("backends.id", ondelete="CASCADE"), primary_key=True)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)
