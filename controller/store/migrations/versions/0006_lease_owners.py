"""lease owners and deadlines, controller instances: a lease interrupted by a crash is finished by another replica

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 06:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recoveries", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_leases_deadline", ["deadline"], unique=False)
    op.create_table(
        "controller_instances",
        sa.Column("instance_id", sa.String(length=160), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance_id"),
    )


def downgrade() -> None:
    op.drop_table("controller_instances")
    with op.batch_alter_table("leases") as batch_op:
        batch_op.drop_index("ix_leases_deadline")
        batch_op.drop_column("recoveries")
        batch_op.drop_column("deadline")
        batch_op.drop_column("owner")
