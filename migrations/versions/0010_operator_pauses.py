"""operator pauses: `outbox pause [--sender]` stores its pause in outbox_pauses, which every
daemon honours (and a restart keeps) until `outbox resume`

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_pauses",
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column(
            "paused_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "sender = '*' OR sender ~ '^[0-9]{1,32}$'", name="ck_outbox_pauses_sender_shape"
        ),
        sa.PrimaryKeyConstraint("sender", name="pk_outbox_pauses"),
    )


def downgrade() -> None:
    op.drop_table("outbox_pauses")
