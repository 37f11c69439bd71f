"""Validation tables (migration ``0003_validations``). They share the store's declarative ``Base``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.store.models import Base, utcnow


class Validation(Base):
    """One NCCL validation: what was asked, how it runs, and the verdict."""

    __tablename__ = "validations"
    __table_args__ = (Index("ix_validations_status_created", "status", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # pending -> running -> passed | failed | error
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # agents (static / OpenStack hosts run nccl-tests) | eks (MPIJob)
    runner: Mapped[str] = mapped_column(String(16))
    # single-node (one run per host) | multi-node (one run across every host)
    mode: Mapped[str] = mapped_column(String(16))
    # manual | burn-in | scheduled
    purpose: Mapped[str] = mapped_column(String(16), default="manual")
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("validation_schedules.id", ondelete="SET NULL"), index=True
    )
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    hosts: Mapped[list[Any]] = mapped_column(default=list)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(160), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    runs: Mapped[list[ValidationRun]] = relationship(
        back_populates="validation", cascade="all, delete-orphan", order_by="ValidationRun.id"
    )


class ValidationRun(Base):
    """One execution of nccl-tests: an agent task on one host, or an MPIJob; its log and parsed result."""

    __tablename__ = "validation_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    validation_id: Mapped[str] = mapped_column(ForeignKey("validations.id", ondelete="CASCADE"), index=True)
    # The hosts this run judges (one for single-node, all for multi-node).
    hosts: Mapped[list[Any]] = mapped_column(default=list)
    # Where it runs: the agent's host (tasks) or the MPIJob's namespace/name.
    launcher: Mapped[str] = mapped_column(String(253), default="")
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    job_name: Mapped[str | None] = mapped_column(String(253))
    job_namespace: Mapped[str | None] = mapped_column(String(253))
    # pending | running | succeeded | failed (how the execution went, not the verdict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    command: Mapped[list[Any]] = mapped_column(default=list)
    log: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    expected: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    validation: Mapped[Validation] = relationship(back_populates="runs")


class HostValidationState(Base):
    """A host's validation state, which placement honours.

    ``state``: unvalidated | held (burn-in pending) | validated | quarantined. ``admin_change`` records
    what this module did to ``hosts.admin_state`` (``quarantined`` / ``drained``) so a later pass
    undoes only its own change, never an admin's.
    """

    __tablename__ = "host_validation_states"
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="unvalidated", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    validation_id: Mapped[str | None] = mapped_column(String(36))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    admin_change: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ValidationSchedule(Base):
    """Revalidation on a cron expression (evaluated with APScheduler's ``CronTrigger``, UTC)."""

    __tablename__ = "validation_schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cron: Mapped[str] = mapped_column(String(128))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_fired_at: Mapped[datetime | None] = mapped_column()
    last_validation_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str] = mapped_column(String(160), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ValidationPolicy(Base):
    """Validation settings for ``global`` or one pool (``pool:<name>``); pool fields override global ones."""

    __tablename__ = "validation_policies"
    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    expected_busbw_gbps: Mapped[float | None] = mapped_column(Float)
    pass_ratio: Mapped[float | None] = mapped_column(Float)
    burn_in: Mapped[bool | None] = mapped_column(Boolean)
    # Hosts registered from this moment on are held until a burn-in validation passes.
    burn_in_since: Mapped[datetime | None] = mapped_column()
    # The test a burn-in runs (the POST /v1/validations fields but hosts); {} = defaults.
    burn_in_request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    burn_in_auto_run: Mapped[bool] = mapped_column(Boolean, default=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
