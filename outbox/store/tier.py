"""The statements of the daily limit (outbox.policy.tier): reserve a customer in the portfolio's
budget of unique customers per moving 24 h, and read how much of it is used.

A reservation runs in a transaction that first takes TIER_LOCK, so that daemons on any host
count and insert one after another: none can see the budget free while another takes its last
place.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one

# pg_advisory_xact_lock key of the budget (any fixed bigint; no other lock of outbox uses it).
TIER_LOCK_KEY = 0x6F7574626F785F74  # "outbox_t"
TIER_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")

# The portfolio's messaging limit as the webhooks last told it (any WABA of this database: the
# portfolio shares it): `known` false when none did; a null limit when known is unlimited.
_WEBHOOK_LIMIT = """
    (SELECT a.messaging_limit FROM outbox_account_health a
     WHERE a.limit_at IS NOT NULL ORDER BY a.limit_at DESC LIMIT 1)
"""

# The customers counted in the last 24 h: the running count of outbox_tier_count less the rows
# older than that, which reservations have not deleted yet (few: each deletes a batch).
_USED = """
    coalesce((SELECT c.used FROM outbox_tier_count c WHERE c.id = 1), 0)
    - (SELECT count(*) FROM outbox_tier_recipients o
       WHERE o.counted_at <= now() - interval '24 hours')
"""
FORGET_BATCH = 256

# Under TIER_LOCK: the budget in effect (configured, else the webhooks'), the customers counted
# in the last 24 h, and whether :key may be sent to now. A customer counted in the last 24 h
# does not count again (its time moves on); a new one takes a place while the count is below
# the budget (below the budget less the reserve for marketing). Each reservation also deletes a
# batch of customers older than 24 h, and moves the running count by what it inserted and
# deleted, so that no reservation counts the table.
RESERVE = sa.text(
    f"""
    WITH limit_in_effect AS (
        SELECT CASE WHEN CAST(:configured_set AS boolean) THEN CAST(:configured AS bigint)
                    ELSE {_WEBHOOK_LIMIT} END AS budget,
               CAST(:configured_set AS boolean)
               OR EXISTS (SELECT 1 FROM outbox_account_health a WHERE a.limit_at IS NOT NULL)
               AS known
    ),
    mine AS (
        SELECT t.counted_at FROM outbox_tier_recipients t WHERE t.customer = :key
    ),
    counted AS (
        SELECT {_USED} AS used,
               EXISTS (SELECT 1 FROM mine WHERE counted_at > now() - interval '24 hours')
               AS already,
               EXISTS (SELECT 1 FROM mine) AS present
    ),
    ruling AS (
        SELECT l.budget, l.known, c.used, c.already, c.present,
               CASE WHEN CAST(:marketing AS boolean) AND l.budget IS NOT NULL
                    THEN l.budget - ceil(l.budget * CAST(:reserve AS numeric) / 100)::bigint
                    ELSE l.budget END AS cap
        FROM limit_in_effect l CROSS JOIN counted c
    ),
    granted AS (
        SELECT r.*, (NOT r.known OR r.budget IS NULL OR r.already OR r.used < r.cap) AS ok
        FROM ruling r
    ),
    taken AS (
        INSERT INTO outbox_tier_recipients AS t (customer, counted_at)
        SELECT :key, now() FROM granted WHERE ok
        ON CONFLICT (customer) DO UPDATE SET counted_at = EXCLUDED.counted_at
        RETURNING t.customer
    ),
    forgotten AS (
        DELETE FROM outbox_tier_recipients WHERE customer IN (
            SELECT o.customer FROM outbox_tier_recipients o
            WHERE o.counted_at <= now() - interval '24 hours' AND o.customer <> :key
            ORDER BY o.counted_at LIMIT {FORGET_BATCH})
        RETURNING customer
    ),
    tally AS (
        INSERT INTO outbox_tier_count AS c (id, used)
        SELECT 1, CASE WHEN g.ok AND NOT g.present THEN 1 ELSE 0 END
                  - (SELECT count(*) FROM forgotten)
        FROM granted g
        ON CONFLICT (id) DO UPDATE SET used = c.used + EXCLUDED.used
        RETURNING c.used
    )
    SELECT g.budget, g.known, g.used, g.already, g.cap, g.ok,
           (SELECT count(*) FROM forgotten) AS forgotten,
           (SELECT count(*) FROM tally) AS tallied,
           CASE WHEN NOT g.ok THEN (
               SELECT o.counted_at + interval '24 hours' FROM outbox_tier_recipients o
               WHERE o.counted_at > now() - interval '24 hours'
               ORDER BY o.counted_at OFFSET greatest(g.used - g.cap, 0) LIMIT 1)
           END AS frees_at
    FROM granted g
    """
)

# How much of the budget the last 24 h used, and the limit the webhooks last told.
USAGE = sa.text(
    f"""
    SELECT {_USED} AS used,
           EXISTS (SELECT 1 FROM outbox_account_health WHERE limit_at IS NOT NULL)
           AS webhook_known,
           {_WEBHOOK_LIMIT} AS webhook_limit
    """
)


async def reserve(
    conn: AsyncConnectionLike,
    key: str,
    *,
    configured: tuple[bool, int | None],
    marketing: bool,
    reserve_percent: int,
) -> Row:
    """Reserve `key` (a canonical customer) in the budget; the caller holds a transaction."""
    await fetch_all(conn, TIER_LOCK, {"key": TIER_LOCK_KEY})
    params: dict[str, Any] = {
        "key": key,
        "configured_set": configured[0],
        "configured": configured[1],
        "marketing": marketing,
        "reserve": reserve_percent,
    }
    row = await fetch_one(conn, RESERVE, params)
    assert row is not None
    return row


async def usage(conn: AsyncConnectionLike) -> Row:
    row = await fetch_one(conn, USAGE)
    assert row is not None
    return row
