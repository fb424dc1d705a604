"""Consent: the marketing suppression list, per sender (phone number id) and customer.

A customer is suppressed by a `user_preferences` webhook "stop", by Meta's 131050 ("user stopped
marketing messages"), by an inbound keyword (OUTBOX_OPTOUT_KEYWORDS: STOP, ALTO, ...) or by the
API and `outbox optout add`; a "resume" webhook or `outbox optout remove` lifts it. Only marketing
templates are withheld: utility and authentication templates, and free-form messages, still go.
A template of unknown category counts as marketing: sending marketing to someone who opted out
hurts the number's quality rating, so the unknown case errs on the side of not sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from outbox.connections import AsyncConnectionLike
from outbox.errors import InvalidMessage
from outbox.policy.numbers import canonical
from outbox.policy.window import default_sender
from outbox.settings import DEFAULT_OPTOUT_KEYWORDS
from outbox.store import policy as store
from outbox.validation import check_storable, normalize_recipient

MARKETING = "marketing"
DEFAULT_KEYWORDS = DEFAULT_OPTOUT_KEYWORDS
MAX_NOTE = 500


def withheld(category: str | None, suppressed: bool) -> bool:
    """Whether a template of `category` (None: unknown) is withheld from this customer."""
    return suppressed and category in (None, MARKETING)


@dataclass(frozen=True)
class OptOut:
    """A suppressed customer of one sender."""

    sender: str
    customer: str
    source: str  # user_preferences, 131050, keyword, api
    detail: str | None
    since: datetime


async def add_optout(
    conn: AsyncConnectionLike, customer: str, *, sender: str | None = None, note: str | None = None
) -> None:
    """Suppress marketing templates to `customer` from `sender` (None: META_PHONE_NUMBER_ID),
    for an opt-out made elsewhere; in the caller's transaction."""
    await _set(conn, customer, sender, suppressed=True, note=note)


async def remove_optout(
    conn: AsyncConnectionLike, customer: str, *, sender: str | None = None, note: str | None = None
) -> None:
    """Lift a suppression (the customer opted in again); in the caller's transaction."""
    await _set(conn, customer, sender, suppressed=False, note=note)


async def list_optouts(
    conn: AsyncConnectionLike, *, sender: str | None = None, limit: int = 1000
) -> list[OptOut]:
    """The customers suppressed now, newest first; `sender` None: every sender's."""
    rows = await store.list_optouts(conn, sender, limit)
    return [
        OptOut(
            sender=str(row["phone_number_id"]),
            customer=str(row["customer"]),
            source=str(row["source"]),
            detail=row["detail"],
            since=row["changed_at"],
        )
        for row in rows
    ]


async def _set(
    conn: AsyncConnectionLike,
    customer: str,
    sender: str | None,
    *,
    suppressed: bool,
    note: str | None,
) -> None:
    number = canonical(normalize_recipient(customer))
    phone = default_sender(sender)
    if note is not None:
        if not isinstance(note, str):
            raise InvalidMessage("note", "must be text", rule="type")
        if len(note) > MAX_NOTE:
            raise InvalidMessage("note", f"must be at most {MAX_NOTE} characters", rule="too_long")
        check_storable(note, "note")
    await store.set_consent(conn, [(phone, number, suppressed, "api", note, None)])
