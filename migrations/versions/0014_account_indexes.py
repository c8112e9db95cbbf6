"""indexes for an account's intents of a day and its positions: planning read them by scanning every
account's (quadratic in the accounts trading that day); on PostgreSQL, room in each page of the two tables
every order updates (an intent twice, its access-log entry once), so those updates stay on their page
and leave the indexes alone (HOT updates)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Measured on 10,000 pipelined calls each: claim 74 -> 62, settle 89 -> 67, in-flight clear 52 -> 44 us of
# PostgreSQL CPU per call.
FILLFACTOR = {"order_intents": 70, "access_log": 80}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, percent in FILLFACTOR.items():
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {int(percent)})")
    op.create_index(
        "ix_order_intents_account_no_trading_day",
        "order_intents",
        ["account_no", "trading_day"],
        unique=False,
    )
    op.create_index(
        op.f("ix_three_tier_strategies_account_no"), "three_tier_strategies", ["account_no"], unique=False
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.drop_index(op.f("ix_three_tier_strategies_account_no"), table_name="three_tier_strategies")
    op.drop_index("ix_order_intents_account_no_trading_day", table_name="order_intents")
