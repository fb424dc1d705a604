"""dashboard rollup: outbox_rollup, request outcomes per minute, sender, template and error
code folded from outbox_events for the dashboard's charts, and outbox_rollup_marks, how far the
fold has read; ix_outbox_messages_waiting, the pending rows that wait for a reason, which the
Operate page counts by reason

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 09:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_rollup",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "minute", "sender", "template", "outcome", "error_code", name="pk_outbox_rollup"
        ),
    )
    op.create_table(
        "outbox_rollup_marks",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("upto", sa.BigInteger(), nullable=False),
        sa.Column(
            "folded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("source", name="pk_outbox_rollup_marks"),
    )
    op.create_index(
        "ix_outbox_messages_waiting",
        "outbox_messages",
        ["id"],
        postgresql_where=sa.text("status = 'pending' AND last_error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_waiting", table_name="outbox_messages")
    op.drop_table("outbox_rollup_marks")
    op.drop_table("outbox_rollup")
