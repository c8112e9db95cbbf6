"""indexes for an account's intents of a day and its positions: planning read them by scanning every
account's (quadratic in the accounts trading that day)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_order_intents_account_no_trading_day", "order_intents", ["account_no", "trading_day"], unique=False
    )
    op.create_index(
        op.f("ix_three_tier_strategies_account_no"), "three_tier_strategies", ["account_no"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_three_tier_strategies_account_no"), table_name="three_tier_strategies")
    op.drop_index("ix_order_intents_account_no_trading_day", table_name="order_intents")
