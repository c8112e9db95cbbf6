"""access log: the order intent a buy was sent for, so that a proven re-send counts once against the limit

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_log") as batch:
        batch.add_column(sa.Column("order_ref", sa.String(length=128), nullable=True))
    op.create_index("ix_access_log_order_ref", "access_log", ["order_ref"])


def downgrade() -> None:
    op.drop_index("ix_access_log_order_ref", table_name="access_log")
    with op.batch_alter_table("access_log") as batch:
        batch.drop_column("order_ref")
