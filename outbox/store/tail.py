"""`outbox tail`: the delivery history as it is appended, read by id.

Ids of outbox_events come from a sequence, and concurrent transactions can commit them out of
order: an id missing from a read may still appear. The reader asks again for such gaps for a
while (GAP_SECONDS in the command) before giving them up (a rolled-back insert leaves one forever).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from outbox.connections import Row, fetch_all, fetch_one
from outbox.store.periods import since_condition, since_params

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# The id to follow from: the newest event's, or the one before the first event since the period.
START_ID = sa.text(
    f"""
    SELECT CASE WHEN CAST(:since_at AS timestamptz) IS NULL
                     AND CAST(:since_ago AS interval) IS NULL
                THEN (SELECT coalesce(max(id), 0) FROM outbox_events)
                ELSE coalesce((SELECT min(id) - 1 FROM outbox_events e
                               WHERE {since_condition("e.at")}),
                              (SELECT coalesce(max(id), 0) FROM outbox_events))
           END AS start
    """
)

# Events after :after, and the gaps asked for again, oldest first, each with its message's
# recipient and status now, and whether it passes the filters (`matches`): every id is returned,
# so that the reader can tell a gap from an event filtered out.
EVENTS_AFTER = sa.text(
    """
    SELECT e.id, e.at, e.message_id, e.part, e.kind, e.http_status, e.error_code, e.detail,
           e.latency_ms, m.recipient, m.status,
           (CAST(:recipient AS text) IS NULL OR m.recipient = CAST(:recipient AS text))
           AND (CAST(:statuses AS text[]) IS NULL
                OR m.status = ANY(CAST(:statuses AS text[]))) AS matches
    FROM outbox_events e JOIN outbox_messages m ON m.id = e.message_id
    WHERE e.id > :after OR e.id = ANY(CAST(:gaps AS bigint[]))
    ORDER BY e.id
    LIMIT :limit
    """
)


async def start_id(conn: AsyncConnection, since: datetime | timedelta | None) -> int:
    row = await fetch_one(conn, START_ID, since_params(since))
    assert row is not None
    return int(row["start"])


async def events_after(
    conn: AsyncConnection,
    *,
    after: int,
    gaps: list[int],
    recipient: str | None,
    statuses: list[str] | None,
    limit: int,
) -> list[Row]:
    params: dict[str, Any] = {
        "after": after,
        "gaps": gaps,
        "recipient": recipient,
        "statuses": statuses or None,
        "limit": limit,
    }
    return await fetch_all(conn, EVENTS_AFTER, params)
