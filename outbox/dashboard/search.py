"""What a search box entry can name: an id, a phone number (in any form enqueue takes), a
wamid or an app reference. Every reading that fits is looked up; the answers are merged."""

from __future__ import annotations

from outbox.connections import AsyncConnectionLike
from outbox.errors import InvalidMessage
from outbox.status import Delivery
from outbox.store import dashboard as lookups
from outbox.validation import normalize_recipient, recipient_digits

LIMIT = 50
MAX_ID = 2**63 - 1


def phone_digits(text: str) -> str | None:
    """The digits enqueue would store for `text`, or None when it is no phone number. A number
    enqueue would refuse today is still looked up as written: older rows may hold one."""
    try:
        return normalize_recipient(text)
    except InvalidMessage:
        pass
    try:
        return recipient_digits(text)
    except InvalidMessage:
        return None


async def find(conn: AsyncConnectionLike, query: str) -> list[Delivery]:
    """Messages the query names, newest first, at most LIMIT."""
    query = query.strip()
    if not query:
        return []
    rows = []
    if query.startswith("wamid."):
        rows += await lookups.find_by_wamid(conn, query, LIMIT)
    else:
        if query.isascii() and query.isdigit() and int(query) <= MAX_ID:
            rows += await lookups.find_by_id(conn, int(query))
        digits = phone_digits(query)
        if digits is not None:
            rows += await lookups.find_by_recipient(conn, digits, LIMIT)
        rows += await lookups.find_by_reference(conn, query, LIMIT)
    found = {int(row["id"]): row for row in rows}
    return [Delivery.from_row(found[key]) for key in sorted(found, reverse=True)][:LIMIT]
