"""`outbox inbound`: the messages customers wrote to our numbers, and each customer's 24-hour
customer-service window (open until 24 h after their last message to that number)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from outbox.connections import Row, fetch_all
from outbox.store.periods import since_condition, since_params

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_FILTER = f"""
    (CAST(:customer AS text) IS NULL OR customer = CAST(:customer AS text))
    AND (CAST(:phone AS text) IS NULL OR phone_number_id = CAST(:phone AS text))
    AND {since_condition("at")}
"""

# The latest :limit inbound messages, newest first.
LATEST_INBOUND = sa.text(
    f"""
    SELECT id, at, phone_number_id, customer, user_id, type, error_code, error_title, wamid,
           received_at
    FROM outbox_inbound WHERE {_FILTER}
    ORDER BY at DESC, id DESC LIMIT :limit
    """
)

# Each customer's window with each number: open until 24 h after their last message. Open ones
# only, soonest to close first, unless a customer is asked for (then closed ones too).
WINDOWS = sa.text(
    f"""
    SELECT customer, user_id, phone_number_id, last_at,
           last_at + interval '24 hours' AS closes_at,
           last_at + interval '24 hours' > now() AS open
    FROM (SELECT customer, user_id, phone_number_id, max(at) AS last_at
          FROM outbox_inbound WHERE {_FILTER}
          GROUP BY customer, user_id, phone_number_id) AS last
    WHERE CAST(:customer AS text) IS NOT NULL OR last_at > now() - interval '24 hours'
    ORDER BY closes_at, customer
    LIMIT :limit
    """
)


# The stored webhook bodies applied at the given times, among the latest :window bodies: an
# inbound message is stored in the transaction that marks its body applied, so its received_at
# is that body's applied_at (the bodies hold what the customer wrote; outbox_inbound does not).
BODIES_APPLIED_AT = sa.text(
    """
    SELECT w.body FROM outbox_webhooks w
    WHERE w.id > (SELECT coalesce(max(id), 0) FROM outbox_webhooks) - :window
      AND w.applied_at = ANY(CAST(:times AS timestamptz[]))
    """
)
BODY_WINDOW = 50_000


async def bodies_applied_at(conn: AsyncConnection, times: list[datetime]) -> list[bytes]:
    rows = await fetch_all(conn, BODIES_APPLIED_AT, {"times": times, "window": BODY_WINDOW})
    return [bytes(row["body"]) for row in rows]


def _params(
    customer: str | None, phone: str | None, since: datetime | timedelta | None, limit: int
) -> dict[str, object]:
    return {"customer": customer, "phone": phone, "limit": limit, **since_params(since)}


async def latest_inbound(
    conn: AsyncConnection,
    *,
    customer: str | None,
    phone: str | None,
    since: datetime | timedelta | None,
    limit: int,
) -> list[Row]:
    return await fetch_all(conn, LATEST_INBOUND, _params(customer, phone, since, limit))


async def windows(
    conn: AsyncConnection,
    *,
    customer: str | None,
    phone: str | None,
    since: datetime | timedelta | None,
    limit: int,
) -> list[Row]:
    return await fetch_all(conn, WINDOWS, _params(customer, phone, since, limit))
