"""The daily limit: the business portfolio's messaging limit (250, 2,000, 10,000, 100,000 or
unlimited unique customers per moving 24 h outside a customer-service window, shared by all
its numbers) is a budget, counted in the database so that every daemon shares it.

Only what the limit counts takes a place: a template (or a fallback template) to a customer
whose window is not known to be open; a customer counted in the last 24 h does not count again.
Marketing (and uncategorised) templates may fill the budget only up to MARKETING_RESERVE percent
short of it, so that utility and authentication templates (an order update, a login code) still
go when a campaign has used the rest. A row beyond the budget makes no request and waits,
`tier_budget`, until a place frees up (the oldest counted customer falls out of the 24 h).

The limit in effect: the configured one (`--daily-limit`, OUTBOX_DAILY_LIMIT) when set, else the
last one Meta's webhooks told (outbox.policy.health), else none (sent as before).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from outbox.connections import AsyncConnectionLike
from outbox.errors import ConfigurationError
from outbox.policy.consent import MARKETING
from outbox.policy.numbers import canonical
from outbox.pool import Pool
from outbox.store import tier as store

TIER_BUDGET = "tier_budget"
MARKETING_RESERVE = 10  # percent of the budget marketing leaves to utility and authentication
RULE = "a positive number of customers (250, 2000, 2K, TIER_10K...) or unlimited"
# Meta's words for the tiers (phone_number_quality_update `current_limit`, `old_limit`,
# `max_daily_conversations_per_business`; whatsapp_business_manager_messaging_limit).
_SIZE = re.compile(r"^(?:TIER_)?([0-9]+)(K?)$")
_UNLIMITED = ("UNLIMITED", "TIER_UNLIMITED")


LIMIT_TTL = 30.0  # seconds a daemon trusts what it read of the webhooks' limit


class LimitWatch:
    """Whether a limit is in effect: the configured one, else the webhooks' (re-read at most
    every LIMIT_TTL seconds). With none, or an unlimited one, a send takes no place in the
    budget: no lock, no count, nothing on the hot path. Customers are counted from the moment a
    limit is known."""

    def __init__(self, pool: Pool, configured: DailyLimit | None) -> None:
        self._pool = pool
        self._configured = configured
        self._known = False
        self._until = float("-inf")

    async def in_effect(self) -> bool:
        if self._configured is not None:
            return self._configured.customers is not None
        now = time.monotonic()
        if now >= self._until:
            async with self._pool.connect() as conn:
                row = await store.usage(conn)
            self._known = bool(row["webhook_known"]) and row["webhook_limit"] is not None
            self._until = now + LIMIT_TTL
        return self._known


@dataclass(frozen=True)
class DailyLimit:
    """A messaging limit: `customers` per moving 24 h, or None for unlimited."""

    customers: int | None

    def __str__(self) -> str:
        return "unlimited" if self.customers is None else str(self.customers)


def read_limit(value: object) -> DailyLimit | None:
    """A limit as Meta or an operator writes it (TIER_250, TIER_2K, 2000, "10000", unlimited);
    None for anything else (TIER_NOT_SET, a bad value): no limit is learned from it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return DailyLimit(value) if 0 < value < 2**62 else None
    if not isinstance(value, str):
        return None
    word = value.strip().upper().replace(",", "").replace(" ", "")
    if word in _UNLIMITED:
        return DailyLimit(None)
    match = _SIZE.match(word)
    if match is None or len(match[1]) > 15:
        return None
    customers = int(match[1]) * (1000 if match[2] else 1)
    return DailyLimit(customers) if customers > 0 else None


def parse_daily_limit(text: str, name: str = "daily-limit") -> DailyLimit:
    """`--daily-limit` / OUTBOX_DAILY_LIMIT: a DailyLimit, or a ConfigurationError naming `name`."""
    limit = read_limit(text)
    if limit is None:
        raise ConfigurationError(f"{name}: {text!r} must be {RULE}")
    return limit


def is_marketing(category: str | None) -> bool:
    """Marketing, or of unknown category (counted as marketing, as consent does)."""
    return category in (None, MARKETING)


@dataclass(frozen=True)
class Reservation:
    """`granted`: the row may go; else it waits until `frees_at` (None: not before the limit
    changes). `reason` is what its last_error says while it waits."""

    granted: bool
    frees_at: datetime | None = None
    reason: str = ""


async def reserve(
    conn: AsyncConnectionLike,
    recipient: str,
    *,
    configured: DailyLimit | None,
    category: str | None,
) -> Reservation:
    """Take the customer's place in the budget, in the caller's transaction (one at a time
    across daemons), or say how long the row waits."""
    marketing = is_marketing(category)
    row = await store.reserve(
        conn,
        canonical(recipient),
        configured=(configured is not None, None if configured is None else configured.customers),
        marketing=marketing,
        reserve_percent=MARKETING_RESERVE,
    )
    if row["ok"]:
        return Reservation(True)
    frees_at: datetime | None = row["frees_at"]
    kind = "marketing share of the " if marketing and row["cap"] != row["budget"] else ""
    when = f"; a place frees at {frees_at.isoformat(timespec='seconds')}" if frees_at else ""
    reason = (
        f"{TIER_BUDGET}: the {kind}daily limit is used ({row['used']} of {row['cap']} unique "
        f"customers in 24 h, portfolio limit {row['budget']}){when}"
    )
    return Reservation(False, frees_at, reason)
