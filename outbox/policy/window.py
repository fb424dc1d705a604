"""The customer-service window: free-form messages reach a customer only within 24 hours of the
customer's last message to that number (72 hours after a click-to-WhatsApp entry point), and
not after Meta said the window is closed (131047) until the customer writes again.

Known only where this database stores inbound messages for the sender: a sender with none is
"unknown" and its rows are sent as before (Meta still refuses what is outside the window).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from outbox.connections import AsyncConnectionLike
from outbox.errors import ConfigurationError
from outbox.policy.numbers import canonical, forms
from outbox.store import policy as store
from outbox.validation import check_sender, normalize_recipient

SERVICE_WINDOW = timedelta(hours=24)  # whatsapp-api.md 5.4
# A referral (click-to-WhatsApp ad or post) makes 72 hours free of charge once the business
# answers within 24 hours, but free-form messages still need this window (Meta's pricing page).


@dataclass(frozen=True)
class Window:
    """The window of one (sender, customer) as the database knows it now.

    `known` is False when no inbound message was ever stored for the sender: then nothing is
    known and `closes_at` is None. `closes_at` is when free-form messages stop being allowed
    (in the past when the window is closed; None when the customer never wrote)."""

    sender: str
    recipient: str
    known: bool
    last_inbound_at: datetime | None
    closes_at: datetime | None
    closed_by_meta_at: datetime | None  # a 131047 said so, after the last inbound message
    now: datetime

    @property
    def open(self) -> bool:
        """Whether a free-form message may go now (True when unknown: sent as before)."""
        if not self.known:
            return True
        return self.closes_at is not None and self.closes_at > self.now


def window_of(sender: str, recipient: str, facts: dict[str, Any]) -> Window:
    """The window from the facts store.policy reads (ROW_FACTS or CUSTOMER_FACTS)."""
    last: datetime | None = facts["last_inbound_at"]
    closed: datetime | None = facts["closed_at"]
    closes_at = None
    if last is not None:
        closes_at = last + SERVICE_WINDOW
    closed_by_meta = closed if closed is not None and last is not None and closed >= last else None
    if closed_by_meta is not None and closes_at is not None:
        closes_at = min(closes_at, closed_by_meta)
    return Window(
        sender=sender,
        recipient=recipient,
        known=bool(facts["known"]),
        last_inbound_at=last,
        closes_at=closes_at,
        closed_by_meta_at=closed_by_meta,
        now=facts["now"],
    )


def default_sender(sender: object) -> str:
    """The phone number id given, else META_PHONE_NUMBER_ID (the daemon's default sender)."""
    checked = check_sender(sender)
    if checked is not None:
        return checked
    configured = os.environ.get("META_PHONE_NUMBER_ID", "").strip()
    if not configured:
        raise ConfigurationError("META_PHONE_NUMBER_ID: needed when no sender is given")
    return configured


async def window(conn: AsyncConnectionLike, recipient: str, sender: str | None = None) -> Window:
    """When the customer-service window of `recipient` with `sender` (a phone number id; None:
    META_PHONE_NUMBER_ID) closes, from the inbound messages stored in this database."""
    number = normalize_recipient(recipient)
    phone = default_sender(sender)
    facts = await store.customer_facts(conn, phone, forms(number), canonical(number))
    return window_of(phone, number, facts)
