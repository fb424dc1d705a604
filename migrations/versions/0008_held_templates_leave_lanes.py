"""held templates leave their lane: a row waiting because Meta paused its template (132015) no
longer holds back its recipient's later rows

A row waiting for a retry holds its lane (per-recipient FIFO), but a template Meta paused waits
for hours while the recipient's other messages could go: such a row, pending with error_code
132015 and not yet due, no longer blocks; rescheduled so, it frees the rows queued behind it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A row held for its paused template: the same test as store.delivery's lane statements.
HELD = (
    "({t}.status = 'pending' AND coalesce({t}.error_code, 0) = 132015 AND {t}.available_at > now())"
)
# As in 0006, but a held row stops no release.
LANE_RELEASE = f"""
    , lane AS MATERIALIZED (
        SELECT g.recipient, g.sender_key, g.id AS gone_id,
               coalesce((SELECT min(b.id) FROM outbox_messages b
                         WHERE b.recipient = g.recipient AND coalesce(b.sender, '') = g.sender_key
                           AND b.id > g.id AND b.status IN ('pending', 'sending')
                           AND (b.status = 'sending' OR b.available_at <= now()
                                OR b.last_error IS NOT NULL)
                           AND NOT {HELD.format(t="b")}),
                        9223372036854775807) AS stop_id
        FROM (SELECT recipient, sender_key, min(id) AS id FROM pg_temp_gone
              GROUP BY recipient, sender_key) AS g)
    UPDATE outbox_messages m SET queued_behind = false
    FROM lane
    WHERE m.recipient = lane.recipient AND m.id > lane.gone_id AND m.id <= lane.stop_id
      AND coalesce(m.sender, '') = lane.sender_key AND m.status = 'pending'
"""
# A row leaves its lane when it leaves pending/sending, or becomes held (never a held row that
# stays held: that ends the recursion through the UPDATE above).
GONE_UPDATED = f"""(SELECT o.id, o.recipient, coalesce(o.sender, '') AS sender_key
                   FROM old_rows o JOIN new_rows n ON n.id = o.id
                   WHERE o.status IN ('pending', 'sending') AND NOT {HELD.format(t="o")}
                     AND (n.status NOT IN ('pending', 'sending') OR {HELD.format(t="n")}))"""
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
    op.execute(UNBLOCK_FUNCTION)


def downgrade() -> None:
    path = Path(__file__).with_name("0006_senders.py")
    spec = importlib.util.spec_from_file_location("outbox_migration_0006", path)
    assert spec is not None
    assert spec.loader is not None
    senders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(senders)
    op.execute(senders.UNBLOCK_FUNCTION)  # a held row holds its lane again
