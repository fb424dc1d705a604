"""Meta's rules: the customer-service window and the suppression list (issue 16, points 1-2)

A free-form row may carry a `fallback` template, sent instead when its customer's window is closed
at send time (`sent_fallback` records it); `category` is its template's Meta category, which
decides whether an opted-out customer gets it. Inbound messages record whether they came through
a click-to-WhatsApp entry point (`referral`: a 72 h window), and are indexed for the send-time
lookup of a customer's last message. `outbox_optouts` is the suppression list per sender, and
`outbox_window_closures` records a 131047 (Meta says the window is closed).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FALLBACK_SHAPE = (
    "fallback IS NULL OR (template IS NULL AND coalesce(jsonb_typeof(fallback) = 'object'"
    " AND jsonb_typeof(fallback -> 'name') = 'string'"
    " AND fallback ->> 'name' ~ '^[a-z0-9_]+$'"
    " AND char_length(fallback ->> 'name') <= 512"
    " AND jsonb_typeof(fallback -> 'language' -> 'code') = 'string'"
    " AND coalesce(jsonb_typeof(fallback -> 'components'), 'array') = 'array', false))"
)


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("fallback", JSONB, nullable=True))
    op.add_column(
        "outbox_messages",
        sa.Column("sent_fallback", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.add_column("outbox_messages", sa.Column("category", sa.Text, nullable=True))
    op.create_check_constraint("fallback_shape", "outbox_messages", FALLBACK_SHAPE)
    op.create_check_constraint(
        "sent_fallback_known", "outbox_messages", "NOT sent_fallback OR fallback IS NOT NULL"
    )
    op.create_check_constraint(
        "category_known",
        "outbox_messages",
        "category IN ('marketing', 'utility', 'authentication')",
    )
    op.add_column(
        "outbox_inbound",
        sa.Column("referral", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.create_index(
        "ix_outbox_inbound_window", "outbox_inbound", ["phone_number_id", "customer", "at"]
    )
    op.create_index(
        "ix_outbox_inbound_referral",
        "outbox_inbound",
        ["phone_number_id", "customer", "at"],
        postgresql_where=sa.text("referral"),
    )
    op.create_table(
        "outbox_optouts",
        sa.Column("phone_number_id", sa.Text, nullable=False),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("suppressed", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.PrimaryKeyConstraint("phone_number_id", "customer", name="pk_outbox_optouts"),
        sa.CheckConstraint(
            "source IN ('user_preferences', '131050', 'keyword', 'api')",
            name="source_known",
        ),
    )
    op.create_index(
        "ix_outbox_optouts_suppressed",
        "outbox_optouts",
        ["phone_number_id", "changed_at"],
        postgresql_where=sa.text("suppressed"),
    )
    op.create_table(
        "outbox_window_closures",
        sa.Column("phone_number_id", sa.Text, nullable=False),
        sa.Column("customer", sa.Text, nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("phone_number_id", "customer", name="pk_outbox_window_closures"),
    )


def downgrade() -> None:
    op.drop_table("outbox_window_closures")
    op.drop_index("ix_outbox_optouts_suppressed", table_name="outbox_optouts")
    op.drop_table("outbox_optouts")
    op.drop_index("ix_outbox_inbound_referral", table_name="outbox_inbound")
    op.drop_index("ix_outbox_inbound_window", table_name="outbox_inbound")
    op.drop_column("outbox_inbound", "referral")
    op.drop_constraint(op.f("ck_outbox_messages_category_known"), "outbox_messages", type_="check")
    op.drop_constraint(
        op.f("ck_outbox_messages_sent_fallback_known"), "outbox_messages", type_="check"
    )
    op.drop_constraint(op.f("ck_outbox_messages_fallback_shape"), "outbox_messages", type_="check")
    op.drop_column("outbox_messages", "category")
    op.drop_column("outbox_messages", "sent_fallback")
    op.drop_column("outbox_messages", "fallback")
