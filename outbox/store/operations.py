"""The dashboard's Operate page, live part: the work in hand (pending and sending rows) by
sender and by what holds them, and the oldest pending row. Each count walks a partial or
status index and stops at :cap rows, so a backlog of millions costs what :cap rows cost."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one
from outbox.store.messages import LIVE_DAEMONS
from outbox.store.pauses import select_pauses

# Pending and sending rows by sender and status, among the first :cap of them.
IN_HAND = sa.text(
    """
    SELECT status, coalesce(sender, '') AS sender, count(*) AS count
    FROM (SELECT status, sender FROM outbox_messages
          WHERE status IN ('pending', 'sending') LIMIT :cap) AS rows
    GROUP BY 1, 2 ORDER BY 2, 1
    """
)

# Pending rows that wait for a reason (quiet hours, a paused template, a budget, a retry after an
# error): the reason's first words, among the first :cap such rows (ix_outbox_messages_waiting).
HELD = sa.text(
    """
    SELECT split_part(last_error, ':', 1) AS reason, count(*) AS count
    FROM (SELECT last_error FROM outbox_messages
          WHERE status = 'pending' AND last_error IS NOT NULL LIMIT :cap) AS rows
    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT :limit
    """
)

# The oldest pending row (ix_outbox_messages_status: by id, which follows creation).
OLDEST_PENDING = sa.text(
    """
    SELECT id, created_at, extract(epoch FROM now() - created_at) AS age
    FROM outbox_messages WHERE status = 'pending' ORDER BY id LIMIT 1
    """
)


NOW = sa.text("SELECT now() AS now")


async def now(conn: AsyncConnectionLike) -> datetime:
    """The database's time: the periods and ages on the page are counted from it."""
    row = await fetch_one(conn, NOW)
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


async def live_daemons(conn: AsyncConnectionLike) -> list[Row]:
    """The daemons that reported within two minutes: state, reason, senders' own states."""
    return await fetch_all(conn, LIVE_DAEMONS)


async def pauses(conn: AsyncConnectionLike) -> list[Row]:
    """The operators' pauses (`outbox pause`)."""
    return await select_pauses(conn)


async def in_hand(conn: AsyncConnectionLike, cap: int) -> list[Row]:
    return await fetch_all(conn, IN_HAND, {"cap": cap})


async def held(conn: AsyncConnectionLike, cap: int, limit: int) -> list[Row]:
    return await fetch_all(conn, HELD, {"cap": cap, "limit": limit})


async def oldest_pending(conn: AsyncConnectionLike) -> Row | None:
    return await fetch_one(conn, OLDEST_PENDING)
