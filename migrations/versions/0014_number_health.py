"""number health and the daily limit: outbox_tier_recipients (the unique customers messaged
outside a customer-service window in the last 24 h, the budget of the portfolio's messaging
limit), outbox_number_health (each number's quality and tier) and outbox_account_health (each
WABA's restrictions and the portfolio's messaging limit), from Meta's webhooks

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_tier_recipients",
        sa.Column("customer", sa.Text(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer", name="pk_outbox_tier_recipients"),
    )
    op.create_index(
        "ix_outbox_tier_recipients_counted_at", "outbox_tier_recipients", ["counted_at"]
    )
    op.create_table(
        "outbox_number_health",
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("waba_id", sa.Text(), nullable=True),
        sa.Column("quality", sa.Text(), nullable=True),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("limit_tier", sa.Text(), nullable=True),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("phone", name="pk_outbox_number_health"),
    )
    op.create_table(
        "outbox_account_health",
        sa.Column("waba_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restricted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("restriction", sa.Text(), nullable=True),
        sa.Column("restricted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("messaging_limit", sa.BigInteger(), nullable=True),
        sa.Column("limit_tier", sa.Text(), nullable=True),
        sa.Column("limit_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("waba_id", name="pk_outbox_account_health"),
    )
    op.create_index("ix_outbox_account_health_limit_at", "outbox_account_health", ["limit_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_account_health_limit_at", table_name="outbox_account_health")
    op.drop_table("outbox_account_health")
    op.drop_table("outbox_number_health")
    op.drop_index("ix_outbox_tier_recipients_counted_at", table_name="outbox_tier_recipients")
    op.drop_table("outbox_tier_recipients")
