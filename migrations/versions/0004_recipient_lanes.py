"""recipient lanes: rows queued behind an older row to the same recipient leave the claim's path

A claim used to walk every pending row in id order and probe each for an older unfinished row
to its recipient: 50,000 rows queued to one recipient cost a second per claim. Now the claim
marks the rows it finds blocked (`queued_behind`), its index leaves them out, and a
statement-level trigger clears the mark of the next rows when rows leave pending/sending.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rows that left pending/sending in one statement (updated or deleted), and what the lanes
# behind them become: in each lane, every pending row after the first that left, up to and
# including the first row that holds the rest back (sending, due, or waiting for a retry), is
# freed. Each is written even when unmarked, so that a claim deciding from an older snapshot that
# it is blocked sees it changed (xmin) and leaves it alone. One statement per statement, not per
# row: a batch of 100 finished rows costs a few milliseconds.
LANE_RELEASE = """
    , lane AS MATERIALIZED (
        SELECT g.recipient, g.id AS gone_id,
               coalesce((SELECT min(b.id) FROM outbox_messages b
                         WHERE b.recipient = g.recipient AND b.id > g.id
                           AND b.status IN ('pending', 'sending')
                           AND (b.status = 'sending' OR b.available_at <= now()
                                OR b.last_error IS NOT NULL)),
                        9223372036854775807) AS stop_id
        FROM (SELECT recipient, min(id) AS id FROM pg_temp_gone GROUP BY recipient) AS g)
    UPDATE outbox_messages m SET queued_behind = false
    FROM lane
    WHERE m.recipient = lane.recipient AND m.id > lane.gone_id AND m.id <= lane.stop_id
      AND m.status = 'pending'
"""
GONE_UPDATED = """(SELECT o.id, o.recipient FROM old_rows o JOIN new_rows n ON n.id = o.id
                   WHERE o.status IN ('pending', 'sending')
                     AND n.status NOT IN ('pending', 'sending'))"""
GONE_DELETED = """(SELECT o.id, o.recipient FROM old_rows o
                   WHERE o.status IN ('pending', 'sending'))"""
UNBLOCK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION outbox_messages_unblock_lanes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS {GONE_UPDATED} THEN
            RETURN NULL;  -- also ends the recursion through our own UPDATE below
        END IF;
        WITH pg_temp_gone AS {GONE_UPDATED} {LANE_RELEASE};
    ELSE
        IF NOT EXISTS {GONE_DELETED} THEN
            RETURN NULL;
        END IF;
        WITH pg_temp_gone AS {GONE_DELETED} {LANE_RELEASE};
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "outbox_messages",
        sa.Column("queued_behind", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_index(
        "ix_outbox_messages_ready",
        "outbox_messages",
        ["available_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND NOT queued_behind"),
    )
    op.create_index(
        "ix_outbox_messages_behind",
        "outbox_messages",
        ["recipient", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND queued_behind"),
    )
    op.execute(UNBLOCK_FUNCTION)
    op.execute(
        "CREATE TRIGGER outbox_messages_unblock_updated AFTER UPDATE ON outbox_messages "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_unblock_lanes()"
    )
    op.execute(
        "CREATE TRIGGER outbox_messages_unblock_deleted AFTER DELETE ON outbox_messages "
        "REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_unblock_lanes()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_messages_unblock_deleted ON outbox_messages")
    op.execute("DROP TRIGGER IF EXISTS outbox_messages_unblock_updated ON outbox_messages")
    op.execute("DROP FUNCTION IF EXISTS outbox_messages_unblock_lanes()")
    op.drop_index("ix_outbox_messages_behind", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_ready", table_name="outbox_messages")
    op.drop_column("outbox_messages", "queued_behind")
