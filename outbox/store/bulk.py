"""Retry and cancel by filter: count what matches, then change it in batches.

The filter is the same in every statement: the action's own status (retry: failed, cancel:
pending), and each of recipient, error code and creation time when given (null: any). A batch
changes only rows up to the highest id counted, so that rows inserted after the operator saw
the count are never swept up with them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from outbox.connections import fetch_all, fetch_one
from outbox.store.periods import since_condition, since_params

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_FILTER = f"""
    status = CAST(:status AS text)
    AND (CAST(:recipient AS text) IS NULL OR recipient = CAST(:recipient AS text))
    AND (CAST(:code AS integer) IS NULL OR error_code = CAST(:code AS integer))
    AND {since_condition("created_at")}
"""

# A part Meta accepted and then failed (a status webhook): a retry never resends an accepted
# part, so it would only have turned the row `sent`. Such rows are counted apart and left alone.
_META_FAILED_A_PART = (
    "EXISTS (SELECT FROM jsonb_array_elements(outbox_messages.parts) AS p(part) "
    "WHERE p.part ->> 'status' = 'failed')"
)

# How many rows match (`actionable`, and `refused`: failed by Meta after it accepted a part),
# and the highest matching id.
COUNT_MATCHING = sa.text(
    f"""
    SELECT count(*) FILTER (WHERE NOT refused) AS actionable,
           count(*) FILTER (WHERE refused) AS refused,
           max(id) AS upto
    FROM (SELECT id, CAST(:status AS text) = 'failed' AND {_META_FAILED_A_PART} AS refused
          FROM outbox_messages WHERE {_FILTER}) AS matching
    """
)

# Requeue up to :batch matching failed rows after :after, up to :upto: attempts reset, accepted
# parts kept (as `outbox retry ID` does).
RETRY_MATCHING = sa.text(
    f"""
    UPDATE outbox_messages m
    SET status = 'pending', attempts = 0, available_at = now(), locked_until = NULL,
        lease_token = NULL, updated_at = now()
    FROM (SELECT id FROM outbox_messages
          WHERE {_FILTER} AND id > :after AND id <= :upto AND NOT {_META_FAILED_A_PART}
          ORDER BY id LIMIT :batch FOR UPDATE) AS picked
    WHERE m.id = picked.id AND m.status = 'failed'
    RETURNING m.id
    """
)

# Cancel up to :batch matching pending rows after :after, up to :upto. A row a daemon claims
# meanwhile is `sending` by the time its lock is free, and stays as it is.
CANCEL_MATCHING = sa.text(
    f"""
    UPDATE outbox_messages m
    SET status = 'cancelled', updated_at = now()
    FROM (SELECT id FROM outbox_messages
          WHERE {_FILTER} AND id > :after AND id <= :upto
          ORDER BY id LIMIT :batch FOR UPDATE) AS picked
    WHERE m.id = picked.id AND m.status = 'pending'
    RETURNING m.id
    """
)

BATCH = 1000


def filter_params(
    status: str,
    *,
    recipient: str | None,
    code: int | None,
    since: datetime | timedelta | None,
) -> dict[str, Any]:
    return {"status": status, "recipient": recipient, "code": code, **since_params(since)}


async def count_matching(conn: AsyncConnection, params: dict[str, Any]) -> tuple[int, int, int]:
    """(actionable, refused, highest id) of the rows the filter matches now."""
    row = await fetch_one(conn, COUNT_MATCHING, params)
    assert row is not None
    return int(row["actionable"]), int(row["refused"]), int(row["upto"] or 0)


async def change_matching(
    conn: AsyncConnection, statement: sa.TextClause, params: dict[str, Any], upto: int
) -> int:
    """Apply RETRY_MATCHING or CANCEL_MATCHING in batches, each committed; how many changed."""
    changed, after = 0, 0
    while True:
        rows = await fetch_all(
            conn, statement, {**params, "after": after, "upto": upto, "batch": BATCH}
        )
        await conn.commit()
        changed += len(rows)
        if not rows:
            return changed
        after = max(int(row["id"]) for row in rows)
