"""broker response times of each trading day per TR (broker_latency), for the average broker response time

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broker_latency",
        sa.Column("trading_day", sa.Date(), nullable=False),
        sa.Column("api_id", sa.String(length=16), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("total_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trading_day", "api_id", name=op.f("pk_broker_latency")),
    )


def downgrade() -> None:
    op.drop_table("broker_latency")
