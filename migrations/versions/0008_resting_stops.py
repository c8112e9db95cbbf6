"""resting stop-limit orders at the broker, owned by the exit state machine

A resting stop is an order intent like any other (sent exactly once, its fills applied by the same code),
with ``trade_type`` STOP_LIMIT, ``price`` its limit and ``stop_price`` its trigger (Kiwoom's ``cond_uv``).
The stop tier's ``conditional_orders.order_no`` names the broker order resting for it.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_intents") as batch:
        batch.add_column(sa.Column("stop_price", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_intents") as batch:
        batch.drop_column("stop_price")
