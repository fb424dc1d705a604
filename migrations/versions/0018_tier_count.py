"""the daily limit's running count: outbox_tier_count, one row holding how many rows
outbox_tier_recipients has, so that a reservation reads a number instead of counting 24 h

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_tier_count",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_outbox_tier_count_one_row"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_tier_count"),
    )
    # Under the budget's lock, so that no reservation runs between the count and the insert.
    op.execute("SELECT pg_advisory_xact_lock(8031453476610924404)")
    op.execute(
        "INSERT INTO outbox_tier_count (id, used) SELECT 1, count(*) FROM outbox_tier_recipients"
    )


def downgrade() -> None:
    op.drop_table("outbox_tier_count")
