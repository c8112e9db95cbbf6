"""access log: index on token_id for the gateway's per-token spending sum (a token's cap holds across processes)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_access_log_token_id", "access_log", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_access_log_token_id", table_name="access_log")
