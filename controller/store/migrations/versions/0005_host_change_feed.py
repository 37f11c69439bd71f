"""host change feed: hosts.change_seq stamped from one fleet clock, and a (status, last_seen) index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 01:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fleet_clock",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO fleet_clock (name, value) VALUES ('hosts', 0)")
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.add_column(sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.create_index("ix_hosts_change_seq", ["change_seq", "id"])
        batch_op.create_index("ix_hosts_status_last_seen", ["status", "last_seen"])


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.drop_index("ix_hosts_status_last_seen")
        batch_op.drop_index("ix_hosts_change_seq")
        batch_op.drop_column("change_seq")
    op.drop_table("fleet_clock")
