"""Operator pauses (outbox_pauses): set, lift, read. Setting or lifting one notifies every daemon
on the `outbox` channel with the payload `pause`, delivered when the transaction commits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


PAUSE_PAYLOAD = "pause"

# Pause a sender ('*': every sender); a sender already paused keeps its first time and reason.
# `paused` is false when it was paused already.
PAUSE = sa.text(
    """
    WITH added AS (
        INSERT INTO outbox_pauses (sender, reason) VALUES (:sender, :reason)
        ON CONFLICT (sender) DO NOTHING
        RETURNING sender)
    SELECT p.sender, p.paused_at, p.reason, EXISTS (SELECT 1 FROM added) AS paused
    FROM (SELECT sender, paused_at, reason FROM outbox_pauses WHERE sender = :sender
          UNION ALL
          SELECT sender, now(), CAST(:reason AS text) FROM added) AS p
    LIMIT 1
    """
)

# Lift a sender's pause ('*': the pause of every sender); returns it if there was one.
RESUME = sa.text("DELETE FROM outbox_pauses WHERE sender = :sender RETURNING sender, paused_at")

# Wake every daemon to read the pauses now (on commit).
NOTIFY_DAEMONS = sa.text(f"SELECT pg_notify('outbox', '{PAUSE_PAYLOAD}') AS notified")

# Every pause in place, oldest first.
SELECT_PAUSES = sa.text(
    "SELECT sender, paused_at, reason FROM outbox_pauses ORDER BY paused_at, sender"
)


async def pause(conn: AsyncConnection, sender: str, reason: str | None) -> Row:
    """Pause `sender` and tell the daemons; the pause as it stands, with `paused` false when it
    was there already."""
    row = await fetch_one(conn, PAUSE, {"sender": sender, "reason": reason})
    assert row is not None
    await fetch_all(conn, NOTIFY_DAEMONS)
    await conn.commit()
    return row


async def resume(conn: AsyncConnection, sender: str) -> Row | None:
    """Lift `sender`'s pause and tell the daemons; the pause lifted, None if there was none."""
    row = await fetch_one(conn, RESUME, {"sender": sender})
    await fetch_all(conn, NOTIFY_DAEMONS)
    await conn.commit()
    return row


async def select_pauses(conn: AsyncConnectionLike) -> list[Row]:
    return await fetch_all(conn, SELECT_PAUSES)
