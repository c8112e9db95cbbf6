"""security rules graded by action: shared sliding windows and finding grades

The burst and refusal windows count an account's recent access-log rows inside the admission's read
(an index on account and time, and one on the refusals only); a key's windows start again when its
status changes (``status_changed_at``, set by the kill switch and by an operator's re-enable).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_api_keys") as batch:
        batch.add_column(sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_access_log_account_no_at", "access_log", ["account_no", "at"])
    op.create_index(
        "ix_access_log_refused_account_no_at", "access_log", ["account_no", "at"],
        postgresql_where=sa.text("allowed = false"), sqlite_where=sa.text("allowed = 0"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_access_log_refused_account_no_at", table_name="access_log")
    op.drop_index("ix_access_log_account_no_at", table_name="access_log")
    with op.batch_alter_table("user_api_keys") as batch:
        batch.drop_column("status_changed_at")
