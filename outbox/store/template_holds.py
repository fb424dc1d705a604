"""The statements by which Meta's word on a template reaches the rows that use it (outbox/policy/
template_holds.py): a PAUSED template holds its unsent template rows, a DISABLED one (or
REJECTED, deleted...) fails them, an APPROVED one makes its held rows due again.

Only `pending` rows change: a row being sent (`sending`) is its daemon's, which reads the
catalogue before each send. A template is matched by name and language code; a row is left
alone while any WABA's catalogue has that template APPROVED (the row may be for that WABA).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, fetch_all

# A row held for its paused template (store.delivery's lanes and migration 0008 know this code):
# it no longer holds back its recipient's later rows.
TEMPLATE_PAUSED_CODE = 132015

_USES_TEMPLATE = """
    m.status = 'pending' AND m.template IS NOT NULL
    AND m.template ->> 'name' = :name AND m.template -> 'language' ->> 'code' = :language
    AND NOT EXISTS (SELECT 1 FROM outbox_templates t
                    WHERE t.name = :name AND t.language = :language AND t.status = 'APPROVED')
"""

# Hold the template's rows until Meta's pause ends (or an APPROVED webhook releases them).
HOLD_ROWS = sa.text(
    f"""
    UPDATE outbox_messages m
    SET available_at = greatest(m.available_at, CAST(:until AS timestamptz)),
        last_error = :reason, error_code = {TEMPLATE_PAUSED_CODE}, updated_at = now()
    WHERE {_USES_TEMPLATE}
    RETURNING m.id
    """
)

# Fail the template's waiting rows, each with a `failed` event in its history: :doubtful for a
# row an earlier request of which may have been accepted (in doubt, or taken over).
FAIL_ROWS = sa.text(
    f"""
    WITH failed AS (
        UPDATE outbox_messages m
        SET status = 'failed', error_code = NULL,
            last_error = CASE WHEN m.in_doubt > 0 OR m.taken_over THEN :doubtful ELSE :reason END,
            locked_until = NULL, lease_token = NULL, updated_at = now()
        WHERE {_USES_TEMPLATE}
        RETURNING m.id, m.last_error)
    , history AS (
        INSERT INTO outbox_events (message_id, kind, detail)
        SELECT id, 'failed', last_error FROM failed)
    SELECT id FROM failed
    """
)

# The template is approved again: its held rows are due now, and the daemons are woken.
RELEASE_ROWS = sa.text(
    f"""
    WITH released AS (
        UPDATE outbox_messages m SET available_at = now(), updated_at = now()
        WHERE m.status = 'pending' AND m.error_code = {TEMPLATE_PAUSED_CODE}
          AND m.available_at > now() AND m.template IS NOT NULL
          AND m.template ->> 'name' = :name AND m.template -> 'language' ->> 'code' = :language
        RETURNING m.id)
    SELECT id, pg_notify('outbox', '') AS woken FROM released
    """
)

# Meta refused a send with 132015 or 132016: the catalogue learns it, for a template it knows.
LEARN_STATUS = sa.text(
    """
    UPDATE outbox_templates SET status = :status, updated_at = now(),
        paused_until = CASE WHEN :status = 'PAUSED'
                            THEN greatest(paused_until, now() + make_interval(secs => :hold))
                            ELSE NULL END
    WHERE name = :name AND language = :language AND status IN ('APPROVED', 'PAUSED')
    RETURNING name
    """
)


async def hold_rows(
    conn: AsyncConnectionLike, name: str, language: str, until: datetime, reason: str
) -> int:
    params = {"name": name, "language": language, "until": until, "reason": reason}
    return len(await fetch_all(conn, HOLD_ROWS, params))


async def fail_rows(
    conn: AsyncConnectionLike, name: str, language: str, reason: str, doubtful: str
) -> int:
    params = {"name": name, "language": language, "reason": reason, "doubtful": doubtful}
    return len(await fetch_all(conn, FAIL_ROWS, params))


async def release_rows(conn: AsyncConnectionLike, name: str, language: str) -> int:
    return len(await fetch_all(conn, RELEASE_ROWS, {"name": name, "language": language}))


async def learn_status(
    conn: AsyncConnectionLike, name: str, language: str, status: str, hold: float
) -> None:
    """Record Meta's answer about a template the catalogue has (PAUSED for `hold` seconds at
    least, or DISABLED)."""
    params = {"name": name, "language": language, "status": status, "hold": hold}
    await fetch_all(conn, LEARN_STATUS, params)
