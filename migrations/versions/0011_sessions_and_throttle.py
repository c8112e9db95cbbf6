"""revocable API sessions (users.session_epoch) and the login/sign-up limiter's shared state

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_throttle")),
    )
    op.create_index(op.f("ix_auth_throttle_window_start"), "auth_throttle", ["window_start"])


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_throttle_window_start"), table_name="auth_throttle")
    op.drop_table("auth_throttle")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_epoch")
