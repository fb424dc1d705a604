"""The webhook receiver's intake statements: many bodies stored in one statement, and the
oldest unapplied bodies taken in a batch for the background applier."""

from __future__ import annotations

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, fetch_all
from outbox.store.webhooks import MAX_WAIT

# Store many raw bodies at once, exactly as received (one statement, one commit for a batch of
# concurrent requests). Returns their ids.
INSERT_WEBHOOKS = sa.text(
    """
    INSERT INTO outbox_webhooks (body)
    SELECT b.body FROM unnest(CAST(:bodies AS bytea[])) WITH ORDINALITY AS b(body, n)
    ORDER BY b.n
    RETURNING id
    """
)

# Up to :limit stored bodies not applied yet, oldest first, locked for this transaction (another
# receiver skips them). :skip lists bodies whose application failed recently.
NEXT_UNAPPLIED_WEBHOOKS = sa.text(
    f"""
    SELECT id, body FROM outbox_webhooks
    WHERE applied_at IS NULL AND received_at > now() - {MAX_WAIT}
      AND id <> ALL(CAST(:skip AS bigint[]))
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)


# Mark stored bodies applied (their contents stored in the same transaction).
MARK_WEBHOOKS_APPLIED = sa.text(
    """
    UPDATE outbox_webhooks SET applied_at = now()
    WHERE id = ANY(CAST(:ids AS bigint[])) AND applied_at IS NULL
    RETURNING id
    """
)


async def insert_webhooks(conn: AsyncConnectionLike, bodies: list[bytes]) -> list[int]:
    """Store `bodies` as received; their ids, in order."""
    if not bodies:
        return []
    rows = await fetch_all(conn, INSERT_WEBHOOKS, {"bodies": bodies})
    return [int(row["id"]) for row in rows]


async def next_unapplied_webhooks(
    conn: AsyncConnectionLike, limit: int, skip: list[int]
) -> list[tuple[int, bytes]]:
    """Up to `limit` unapplied bodies, oldest first, locked until the transaction ends."""
    rows = await fetch_all(conn, NEXT_UNAPPLIED_WEBHOOKS, {"limit": limit, "skip": skip})
    return [(int(row["id"]), bytes(row["body"])) for row in rows]


# A round trip and a commit: the database takes writes again.
PING = sa.text("SELECT 1 AS ok")


async def ping(conn: AsyncConnectionLike) -> None:
    await fetch_all(conn, PING)


async def mark_webhooks_applied(conn: AsyncConnectionLike, ids: list[int]) -> None:
    """Mark the bodies `ids` applied."""
    await fetch_all(conn, MARK_WEBHOOKS_APPLIED, {"ids": ids})
