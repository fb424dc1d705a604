"""The statements of Meta's rules (outbox/policy/): the facts a send-time decision needs, the
suppression list, window closures and referral marks written by the webhook receiver.

A customer is looked up in outbox_inbound by every form of its number (:forms, Meta's `from` as
received) and in our own tables by its canonical form (:key); see outbox.policy.numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one


# The window and consent facts of one (sender, customer), as columns of a SELECT, from SQL
# expressions for the sender, the forms of the number (a text[]) and its canonical key. The last
# message is one backward probe of ix_outbox_inbound_window per form of the number.
def _facts(sender: str, forms: str, key: str) -> str:
    return f"""
       now() AS now,
       EXISTS (SELECT 1 FROM outbox_inbound i WHERE i.phone_number_id = {sender}) AS known,
       (SELECT max(last.at) FROM unnest({forms}) AS f(customer)
        CROSS JOIN LATERAL (SELECT i.at FROM outbox_inbound i
                            WHERE i.phone_number_id = {sender} AND i.customer = f.customer
                            ORDER BY i.at DESC LIMIT 1) AS last) AS last_inbound_at,
       (SELECT c.closed_at FROM outbox_window_closures c
        WHERE c.phone_number_id = {sender} AND c.customer = {key}) AS closed_at,
       coalesce((SELECT o.suppressed FROM outbox_optouts o
                 WHERE o.phone_number_id = {sender} AND o.customer = {key}), false) AS suppressed
"""


_FACTS = _facts(":sender", "CAST(:forms AS text[])", ":key")

# A row's own facts: its fallback, category and own quiet hours, and the catalogue's status of
# the template it would send (its own, else its fallback; APPROVED first when several WABAs have
# it).
_ROW = """
    m.fallback::text AS fallback, m.sent_fallback, m.category, m.quiet_hours,
    m.timezone, coalesce(m.template, m.fallback) ->> 'name' AS template_name,
    coalesce(m.template, m.fallback) -> 'language' ->> 'code' AS template_language,
    catalogue.status AS template_status, catalogue.paused_until AS template_paused_until
"""
_CATALOGUE = """
    LEFT JOIN LATERAL (
        SELECT t.status, t.paused_until FROM outbox_templates t
        WHERE t.name = coalesce(m.template, m.fallback) ->> 'name'
          AND t.language = coalesce(m.template, m.fallback) -> 'language' ->> 'code'
        ORDER BY t.status = 'APPROVED' DESC, t.status = 'PAUSED' DESC, t.updated_at DESC
        LIMIT 1) AS catalogue ON true
"""

# What the daemon decides a claimed row by, in one round trip: the row's own facts and its
# customer's window and consent.
ROW_FACTS = sa.text(
    f"""
    SELECT {_ROW}, {_FACTS}
    FROM outbox_messages m {_CATALOGUE}
    WHERE m.id = :id
    """
)

# The same for a claim's rows at once (one statement per claim, not one per row): each row with
# its sender, its number's forms (comma-separated: numbers are digits) and canonical key.
ROWS_FACTS = sa.text(
    f"""
    SELECT v.id, {_ROW}, {_facts("v.sender", "string_to_array(v.forms, ',')", "v.key")}
    FROM unnest(CAST(:ids AS bigint[]), CAST(:senders AS text[]), CAST(:forms AS text[]),
                CAST(:keys AS text[])) AS v(id, sender, forms, key)
    JOIN outbox_messages m ON m.id = v.id {_CATALOGUE}
    """
)

# A customer's window and consent, for outbox.window() and `outbox status`.
CUSTOMER_FACTS = sa.text(f"SELECT {_FACTS}")

# The row goes out as its fallback template from now on (under its lease).
MARK_SENT_FALLBACK = sa.text(
    """
    UPDATE outbox_messages SET sent_fallback = true, updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'sending' AND fallback IS NOT NULL
    RETURNING id
    """
)

# Meta said these windows are closed (131047) at these times; the latest closure is kept.
CLOSE_WINDOWS = sa.text(
    """
    INSERT INTO outbox_window_closures AS w (phone_number_id, customer, closed_at)
    SELECT DISTINCT ON (v.phone, v.customer) v.phone, v.customer, coalesce(v.at, now())
    FROM unnest(CAST(:phones AS text[]), CAST(:customers AS text[]),
                CAST(:ats AS timestamptz[])) AS v(phone, customer, at)
    ORDER BY v.phone, v.customer, coalesce(v.at, now()) DESC
    ON CONFLICT (phone_number_id, customer)
    DO UPDATE SET closed_at = greatest(w.closed_at, EXCLUDED.closed_at)
    RETURNING w.customer
    """
)

# Opt-outs and their withdrawals; per customer the latest choice wins (by when it was made: a
# late webhook never undoes a newer choice). A null time is now().
SET_CONSENT = sa.text(
    """
    INSERT INTO outbox_optouts AS o (phone_number_id, customer, suppressed, source, detail,
                                     changed_at)
    SELECT DISTINCT ON (v.phone, v.customer)
           v.phone, v.customer, v.suppressed, v.source, v.detail, coalesce(v.at, now())
    FROM unnest(CAST(:phones AS text[]), CAST(:customers AS text[]),
                CAST(:suppressed AS boolean[]), CAST(:sources AS text[]),
                CAST(:details AS text[]), CAST(:ats AS timestamptz[]))
         WITH ORDINALITY AS v(phone, customer, suppressed, source, detail, at, n)
    ORDER BY v.phone, v.customer, coalesce(v.at, now()) DESC, v.n DESC
    ON CONFLICT (phone_number_id, customer) DO UPDATE
    SET suppressed = EXCLUDED.suppressed, source = EXCLUDED.source, detail = EXCLUDED.detail,
        changed_at = EXCLUDED.changed_at, updated_at = now()
    WHERE o.changed_at <= EXCLUDED.changed_at
    RETURNING o.customer
    """
)

# The customers suppressed now, newest first; :sender null: every sender's.
LIST_OPTOUTS = sa.text(
    """
    SELECT phone_number_id, customer, source, detail, changed_at FROM outbox_optouts
    WHERE suppressed AND (CAST(:sender AS text) IS NULL OR phone_number_id = :sender)
    ORDER BY changed_at DESC, phone_number_id, customer
    LIMIT :limit
    """
)

# Inbound messages that came through a click-to-WhatsApp entry point (stored just before).
MARK_REFERRALS = sa.text(
    """
    UPDATE outbox_inbound SET referral = true
    WHERE wamid = ANY(CAST(:wamids AS text[])) AND NOT referral
    RETURNING id
    """
)


def _facts_params(sender: str, forms: list[str], key: str) -> dict[str, Any]:
    return {"sender": sender, "forms": forms, "key": key}


async def row_facts(
    conn: AsyncConnectionLike, row_id: int, sender: str, forms: list[str], key: str
) -> Row | None:
    return await fetch_one(conn, ROW_FACTS, {"id": row_id, **_facts_params(sender, forms, key)})


async def rows_facts(
    conn: AsyncConnectionLike, rows: list[tuple[int, str, list[str], str]]
) -> dict[int, Row]:
    """ROW_FACTS of (row id, sender, forms of its number, canonical key) rows, by row id."""
    if not rows:
        return {}
    ids, senders, forms, keys = (list(column) for column in zip(*rows, strict=True))
    params = {"ids": ids, "senders": senders, "forms": [",".join(f) for f in forms], "keys": keys}
    return {int(row["id"]): row for row in await fetch_all(conn, ROWS_FACTS, params)}


async def customer_facts(conn: AsyncConnectionLike, sender: str, forms: list[str], key: str) -> Row:
    row = await fetch_one(conn, CUSTOMER_FACTS, _facts_params(sender, forms, key))
    assert row is not None
    return row


async def mark_sent_fallback(conn: AsyncConnectionLike, row_id: int, token: object) -> bool:
    """False when the row is no longer ours (its lease was lost)."""
    return bool(await fetch_all(conn, MARK_SENT_FALLBACK, {"id": row_id, "token": token}))


async def close_windows(
    conn: AsyncConnectionLike, closures: list[tuple[str, str, datetime | None]]
) -> None:
    """Record (sender, canonical customer, when) closures."""
    if closures:
        phones, customers, ats = (list(column) for column in zip(*closures, strict=True))
        await fetch_all(conn, CLOSE_WINDOWS, {"phones": phones, "customers": customers, "ats": ats})


async def set_consent(
    conn: AsyncConnectionLike,
    changes: list[tuple[str, str, bool, str, str | None, datetime | None]],
) -> int:
    """Apply (sender, canonical customer, suppressed, source, detail, when) choices; how many
    rows changed."""
    if not changes:
        return 0
    phones, customers, suppressed, sources, details, ats = (
        list(column) for column in zip(*changes, strict=True)
    )
    rows = await fetch_all(
        conn,
        SET_CONSENT,
        {
            "phones": phones,
            "customers": customers,
            "suppressed": suppressed,
            "sources": sources,
            "details": details,
            "ats": ats,
        },
    )
    return len(rows)


async def list_optouts(conn: AsyncConnectionLike, sender: str | None, limit: int) -> list[Row]:
    return await fetch_all(conn, LIST_OPTOUTS, {"sender": sender, "limit": limit})


async def mark_referrals(conn: AsyncConnectionLike, wamids: list[str]) -> None:
    if wamids:
        await fetch_all(conn, MARK_REFERRALS, {"wamids": wamids})
