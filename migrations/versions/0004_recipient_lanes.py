"""recipient lanes: rows queued behind an older row to the same recipient leave the claim's path

A claim used to walk every pending row in id order and probe each for an older unfinished row
to its recipient: 50,000 rows queued to one recipient cost a second per claim. Now the claim
marks the rows it finds blocked (`queued_behind`), its index leaves them out, and a trigger
clears the mark of the next rows when a row leaves pending/sending.

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

# When a row leaves pending/sending (or is deleted), the rows after it to the same recipient
# may move: clear the mark of each, up to and including the first that holds the rest back
# (sending, due, or waiting for a retry). Each is written even when unmarked, so that a claim
# deciding from an older snapshot that it is blocked sees it changed and leaves it alone.
UNBLOCK_FUNCTION = """
CREATE OR REPLACE FUNCTION outbox_messages_unblock_next() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    next_row record;
BEGIN
    FOR next_row IN
        SELECT id, status, available_at, last_error FROM outbox_messages
        WHERE recipient = OLD.recipient AND id > OLD.id AND status IN ('pending', 'sending')
        ORDER BY id
    LOOP
        IF next_row.status = 'pending' THEN
            UPDATE outbox_messages SET queued_behind = false WHERE id = next_row.id;
        END IF;
        EXIT WHEN next_row.status = 'sending' OR next_row.available_at <= now()
                  OR next_row.last_error IS NOT NULL;
    END LOOP;
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
        "CREATE TRIGGER outbox_messages_unblock_next AFTER UPDATE OF status ON outbox_messages "
        "FOR EACH ROW WHEN (OLD.status IN ('pending', 'sending') "
        "AND NEW.status NOT IN ('pending', 'sending')) "
        "EXECUTE FUNCTION outbox_messages_unblock_next()"
    )
    op.execute(
        "CREATE TRIGGER outbox_messages_unblock_deleted AFTER DELETE ON outbox_messages "
        "FOR EACH ROW WHEN (OLD.status IN ('pending', 'sending')) "
        "EXECUTE FUNCTION outbox_messages_unblock_next()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_messages_unblock_deleted ON outbox_messages")
    op.execute("DROP TRIGGER IF EXISTS outbox_messages_unblock_next ON outbox_messages")
    op.execute("DROP FUNCTION IF EXISTS outbox_messages_unblock_next()")
    op.drop_index("ix_outbox_messages_behind", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_ready", table_name="outbox_messages")
    op.drop_column("outbox_messages", "queued_behind")
