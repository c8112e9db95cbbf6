"""access log: index on (account_no, action, at) for the gateway's per-account spending sum

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_access_log_account_action_at", "access_log", ["account_no", "action", "at"])


def downgrade() -> None:
    op.drop_index("ix_access_log_account_action_at", table_name="access_log")
