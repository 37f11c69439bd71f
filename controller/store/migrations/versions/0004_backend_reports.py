"""backend reports: the last OpenStack sync/reconcile report per backend

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backend_reports",
        sa.Column("backend_id", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["backend_id"], ["backends.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("backend_id"),
    )


def downgrade() -> None:
    op.drop_table("backend_reports")
