"""dashboard: a message's `reference` (the app's own name for it, `booking-1234`), indexed so
the dashboard finds a message by it; and outbox_audit, who did what from the dashboard

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 06:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("reference", sa.Text(), nullable=True))
    op.create_check_constraint(
        "reference_length", "outbox_messages", "char_length(reference) BETWEEN 1 AND 255"
    )
    # A new column holds no value yet, so building the index takes no time worth a CONCURRENTLY.
    op.create_index(
        "ix_outbox_messages_reference",
        "outbox_messages",
        ["reference", "id"],
        postgresql_where=sa.text("reference IS NOT NULL"),
    )

    op.create_table(
        "outbox_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_audit"),
    )
    op.create_index(
        "ix_outbox_audit_message",
        "outbox_audit",
        ["message_id", "id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_audit_message", table_name="outbox_audit")
    op.drop_table("outbox_audit")
    op.drop_index("ix_outbox_messages_reference", table_name="outbox_messages")
    op.drop_constraint("ck_outbox_messages_reference_length", "outbox_messages")
    op.drop_column("outbox_messages", "reference")
