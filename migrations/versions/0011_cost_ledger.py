"""cost ledger: outbox_costs keeps the `pricing` of each part's status webhooks, which
`outbox stats --cost` prices with the rate card

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_costs",
        sa.Column("wamid", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("part", sa.Integer(), nullable=True),
        sa.Column("template", sa.Text(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("pricing_type", sa.Text(), nullable=True),
        sa.Column("pricing_model", sa.Text(), nullable=True),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("billed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("wamid", name="pk_outbox_costs"),
    )
    op.create_index("ix_outbox_costs_billed_at", "outbox_costs", ["billed_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_costs_billed_at", table_name="outbox_costs")
    op.drop_table("outbox_costs")
