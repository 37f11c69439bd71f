"""leases.access_sealed: what a ready lease hands its tenant (credentials), encrypted (controller/leases/access.py)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch_op:
        batch_op.add_column(sa.Column("access_sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch_op:
        batch_op.drop_column("access_sealed")
