"""The statements of number health (outbox.policy.health): each number's quality and tier, each
WABA's account events and the portfolio's messaging limit, as Meta's webhooks tell them.

A change older than what is stored (Meta's entry.time) never overwrites it: webhooks are
retried and may arrive out of order.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all

# A phone_number_quality_update: what it does not say (quality, tier) is kept.
RECORD_NUMBER = sa.text(
    """
    INSERT INTO outbox_number_health AS n (phone, waba_id, quality, event, limit_tier, event_at)
    VALUES (:phone, :waba, :quality, :event, :tier, coalesce(CAST(:at AS timestamptz), now()))
    ON CONFLICT (phone) DO UPDATE
    SET waba_id = coalesce(EXCLUDED.waba_id, n.waba_id),
        quality = coalesce(EXCLUDED.quality, n.quality),
        event = coalesce(EXCLUDED.event, n.event),
        limit_tier = coalesce(EXCLUDED.limit_tier, n.limit_tier),
        event_at = EXCLUDED.event_at, updated_at = now()
    WHERE n.event_at <= EXCLUDED.event_at
    RETURNING n.phone
    """
)

# The portfolio's messaging limit as one WABA's webhook told it (:limit null: unlimited).
RECORD_LIMIT = sa.text(
    """
    INSERT INTO outbox_account_health AS a (waba_id, messaging_limit, limit_tier, limit_at)
    VALUES (:waba, :limit, :tier, coalesce(CAST(:at AS timestamptz), now()))
    ON CONFLICT (waba_id) DO UPDATE
    SET messaging_limit = EXCLUDED.messaging_limit, limit_tier = EXCLUDED.limit_tier,
        limit_at = EXCLUDED.limit_at, updated_at = now()
    WHERE a.limit_at IS NULL OR a.limit_at <= EXCLUDED.limit_at
    RETURNING a.waba_id
    """
)

# An account_update; :decides false keeps the restriction as it was (an event about something
# else, such as a verification).
RECORD_ACCOUNT_EVENT = sa.text(
    """
    INSERT INTO outbox_account_health AS a (waba_id, event, event_at, restricted, restriction,
                                            restricted_until)
    VALUES (:waba, :event, coalesce(CAST(:at AS timestamptz), now()),
            CAST(:restricted AS boolean), :restriction, :until)
    ON CONFLICT (waba_id) DO UPDATE
    SET event = EXCLUDED.event, event_at = EXCLUDED.event_at,
        restricted = CASE WHEN :decides THEN EXCLUDED.restricted ELSE a.restricted END,
        restriction = CASE WHEN :decides THEN EXCLUDED.restriction ELSE a.restriction END,
        restricted_until = CASE WHEN :decides THEN EXCLUDED.restricted_until
                                ELSE a.restricted_until END,
        updated_at = now()
    WHERE a.event_at IS NULL OR a.event_at <= EXCLUDED.event_at
    RETURNING a.waba_id
    """
)

NUMBERS = sa.text(
    """
    SELECT phone, waba_id, quality, event, limit_tier, event_at FROM outbox_number_health
    ORDER BY phone
    """
)

# Each WABA, `restricted` only while its restriction lasts.
ACCOUNTS = sa.text(
    """
    SELECT waba_id, event, event_at,
           restricted AND (restricted_until IS NULL OR restricted_until > now()) AS restricted,
           restriction, restricted_until, messaging_limit, limit_tier, limit_at
    FROM outbox_account_health ORDER BY waba_id
    """
)


async def record_number(
    conn: AsyncConnectionLike,
    *,
    phone: str,
    waba: str | None,
    quality: str | None,
    event: str | None,
    tier: str | None,
    at: datetime | None,
) -> None:
    params = {
        "phone": phone,
        "waba": waba,
        "quality": quality,
        "event": event,
        "tier": tier,
        "at": at,
    }
    await fetch_all(conn, RECORD_NUMBER, params)


async def record_limit(
    conn: AsyncConnectionLike, *, waba: str, limit: int | None, tier: str, at: datetime | None
) -> None:
    await fetch_all(conn, RECORD_LIMIT, {"waba": waba, "limit": limit, "tier": tier, "at": at})


async def record_account_event(
    conn: AsyncConnectionLike,
    *,
    waba: str,
    event: str,
    at: datetime | None,
    decides: bool,
    restricted: bool,
    restriction: str | None,
    until: datetime | None,
) -> None:
    params = {
        "waba": waba,
        "event": event,
        "at": at,
        "decides": decides,
        "restricted": restricted,
        "restriction": restriction,
        "until": until,
    }
    await fetch_all(conn, RECORD_ACCOUNT_EVENT, params)


async def numbers(conn: AsyncConnectionLike) -> list[Row]:
    return await fetch_all(conn, NUMBERS)


async def accounts(conn: AsyncConnectionLike) -> list[Row]:
    return await fetch_all(conn, ACCOUNTS)
