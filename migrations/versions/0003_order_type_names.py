"""order intents: the order type is stored by name (AFTER_HOURS_CLOSE, MARKET, ...), not a 2-digit code

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_intents", schema=None) as batch_op:
        batch_op.alter_column(
            "trade_type",
            existing_type=sa.String(length=4),
            type_=sa.String(length=24),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("order_intents", schema=None) as batch_op:
        batch_op.alter_column(
            "trade_type",
            existing_type=sa.String(length=24),
            type_=sa.String(length=4),
            existing_nullable=False,
        )
