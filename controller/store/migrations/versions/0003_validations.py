"""NCCL validations: validations, their runs, host validation state, schedules, policies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "validation_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_validation_id", sa.String(length=36), nullable=True),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "validations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("runner", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["schedule_id"], ["validation_schedules.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validations_status_created", "validations", ["status", "created_at"])
    op.create_index("ix_validations_schedule_id", "validations", ["schedule_id"])
    op.create_table(
        "validation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("validation_id", sa.String(length=36), nullable=False),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("launcher", sa.String(length=253), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("job_name", sa.String(length=253), nullable=True),
        sa.Column("job_namespace", sa.String(length=253), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("log", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("expected", sa.JSON(), nullable=True),
        sa.Column("verdict", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["validation_id"], ["validations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_validation_runs_validation_id", "validation_runs", ["validation_id"])
    op.create_index("ix_validation_runs_task_id", "validation_runs", ["task_id"])
    op.create_table(
        "host_validation_states",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("validation_id", sa.String(length=36), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("admin_change", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_id"),
    )
    op.create_index("ix_host_validation_states_state", "host_validation_states", ["state"])
    op.create_table(
        "validation_policies",
        sa.Column("scope", sa.String(length=160), nullable=False),
        sa.Column("expected_busbw_gbps", sa.Float(), nullable=True),
        sa.Column("pass_ratio", sa.Float(), nullable=True),
        sa.Column("burn_in", sa.Boolean(), nullable=True),
        sa.Column("burn_in_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("burn_in_request", sa.JSON(), nullable=False),
        sa.Column("burn_in_auto_run", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )


def downgrade() -> None:
    op.drop_table("validation_policies")
    op.drop_index("ix_host_validation_states_state", table_name="host_validation_states")
    op.drop_table("host_validation_states")
    op.drop_index("ix_validation_runs_task_id", table_name="validation_runs")
    op.drop_index("ix_validation_runs_validation_id", table_name="validation_runs")
    op.drop_table("validation_runs")
    op.drop_index("ix_validations_schedule_id", table_name="validations")
    op.drop_index("ix_validations_status_created", table_name="validations")
    op.drop_table("validations")
    op.drop_table("validation_schedules")
