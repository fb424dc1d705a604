"""senders: a row may name the phone number id it goes from; lanes and daemon states per sender

Per-recipient order becomes per (sender, recipient): messages from two business numbers are two
conversations, and a blocked number must not hold back the other's messages to the same person.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 04:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0004, with lanes keyed by (recipient, sender): coalesce(sender, '') is the default one.
# The first blocking row after each lane's first gone row is found once per lane (MATERIALIZED),
# so the UPDATE reads an id range of the lane, not every row after it: a 50,000-row lane costs
# one or two index probes, not 50,000.
LANE_RELEASE = """
    , lane AS MATERIALIZED (
        SELECT g.recipient, g.sender_key, g.id AS gone_id,
               coalesce((SELECT min(b.id) FROM outbox_messages b
                         WHERE b.recipient = g.recipient AND coalesce(b.sender, '') = g.sender_key
                           AND b.id > g.id AND b.status IN ('pending', 'sending')
                           AND (b.status = 'sending' OR b.available_at <= now()
                                OR b.last_error IS NOT NULL)),
                        9223372036854775807) AS stop_id
        FROM (SELECT recipient, sender_key, min(id) AS id FROM pg_temp_gone
              GROUP BY recipient, sender_key) AS g)
    UPDATE outbox_messages m SET queued_behind = false
    FROM lane
    WHERE m.recipient = lane.recipient AND m.id > lane.gone_id AND m.id <= lane.stop_id
      AND coalesce(m.sender, '') = lane.sender_key AND m.status = 'pending'
"""
GONE_UPDATED = """(SELECT o.id, o.recipient, coalesce(o.sender, '') AS sender_key
                   FROM old_rows o JOIN new_rows n ON n.id = o.id
                   WHERE o.status IN ('pending', 'sending')
                     AND n.status NOT IN ('pending', 'sending'))"""
GONE_DELETED = """(SELECT o.id, o.recipient, coalesce(o.sender, '') AS sender_key FROM old_rows o
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
    op.add_column("outbox_messages", sa.Column("sender", sa.Text(), nullable=True))
    op.create_check_constraint("sender_digits", "outbox_messages", r"sender ~ '^[0-9]{1,32}$'")
    op.add_column(
        "outbox_daemons",
        sa.Column(
            "senders",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.execute(UNBLOCK_FUNCTION)


def downgrade() -> None:
    path = Path(__file__).with_name("0004_recipient_lanes.py")
    spec = importlib.util.spec_from_file_location("outbox_migration_0004", path)
    assert spec is not None
    assert spec.loader is not None
    lanes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lanes)
    op.execute(lanes.UNBLOCK_FUNCTION)  # lanes by recipient alone again
    op.drop_column("outbox_daemons", "senders")
    op.drop_constraint("ck_outbox_messages_sender_digits", "outbox_messages")
    op.drop_column("outbox_messages", "sender")
