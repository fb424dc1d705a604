"""The webhook receiver's statements: store bodies, statuses and inbound messages; apply statuses.

A status applies to a part only when the part's recorded wamid is the status's wamid. Applying is
monotonic (sent < delivered < read; a failed part stays failed) and one statement per batch: the
rows a batch touches are locked in id order and each is updated once with every status it got.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.connections import AsyncConnectionLike, Row, fetch_all, fetch_one
from outbox.cost.pricing import PRICING_FIELDS

# How long a status may wait for its part to be recorded, and a stored body to be re-applied
# (Meta itself retries a webhook for about as long).
MAX_WAIT = "interval '7 days'"

# Store a body exactly as received, before anything else is done with it.
INSERT_WEBHOOK = sa.text("INSERT INTO outbox_webhooks (body) VALUES (:body) RETURNING id")

# Bound the wait for a row lock while applying on the request path (the rest of the transaction).
SET_LOCK_TIMEOUT = sa.text("SELECT set_config('lock_timeout', :lock_timeout, true) AS value")

# Store a body's statuses, inbound messages and reported errors, and mark the body applied.
# Returns the ids of the statuses to apply. A (wamid, status) already stored is a replay: skipped,
# also when a concurrent request stores it (the unique constraint makes the later one wait, then
# skip). Callback data names one of our rows only when its installation is ours, or, in the old
# form without one, when the row was created before installations existed or within a day after
# (daemons of the previous version still send the old form during a rolling upgrade; a send in
# doubt is settled by it only if its recipient matches too); anything else is another
# deployment's (or integration's) and is stored without a row, findable by wamid alone.
# A status's pricing goes to the cost ledger (outbox_costs) once per wamid, from the first status
# that carries it; a later one that differs only marks the part `changed`. Also returned:
# (country, category, billed_at) of each part of ours newly found charged.
STORE_CONTENTS = sa.text(
    """
    WITH installation AS (SELECT id, created_at FROM outbox_installation LIMIT 1),
    incoming AS (
        SELECT v.*,
               CASE WHEN v.installation = (SELECT i.id FROM installation i) THEN v.row_id
                    WHEN v.installation IS NULL AND EXISTS (
                        SELECT 1 FROM outbox_messages m, installation i
                        WHERE m.id = v.row_id
                          AND m.created_at < i.created_at + interval '1 day') THEN v.row_id
               END AS ours
        FROM unnest(CAST(:wamids AS text[]), CAST(:installations AS text[]),
                    CAST(:row_ids AS bigint[]), CAST(:parts AS int[]),
                    CAST(:statuses AS text[]), CAST(:ats AS timestamptz[]),
                    CAST(:codes AS int[]), CAST(:titles AS text[]),
                    CAST(:recipients AS text[]), CAST(:priced_billable AS boolean[]),
                    CAST(:priced_category AS text[]), CAST(:priced_pricing_type AS text[]),
                    CAST(:priced_pricing_model AS text[]), CAST(:priced_country AS text[]))
             WITH ORDINALITY AS v(wamid, installation, row_id, part, status, at, code, title,
                                  recipient, billable, category, pricing_type, pricing_model,
                                  country, n)),
    new_statuses AS (
        INSERT INTO outbox_statuses (wamid, message_id, part, status, at, error_code,
                                     error_title, recipient)
        SELECT d.wamid, d.ours, d.part, d.status, d.at, d.code, d.title, d.recipient
        FROM (SELECT DISTINCT ON (v.wamid, v.status)
                     v.wamid, v.ours, CASE WHEN v.ours IS NOT NULL THEN v.part END AS part,
                     v.status, v.at, v.code, v.title, v.recipient, v.n
              FROM incoming v
              ORDER BY v.wamid, v.status, v.n) AS d
        ORDER BY d.n  -- ids in arrival order: a message's history, and failed before delivered
        ON CONFLICT (wamid, status) DO NOTHING
        RETURNING id),
    new_costs AS (
        INSERT INTO outbox_costs AS c (wamid, message_id, part, template, recipient, country,
                                       category, pricing_type, pricing_model, billable,
                                       billed_at, changed)
        SELECT d.wamid, d.ours, CASE WHEN d.ours IS NOT NULL THEN d.part END,
               (SELECT coalesce(m.template ->> 'name', m.fallback ->> 'name')
                FROM outbox_messages m WHERE m.id = d.ours),
               d.recipient, d.country, d.category, d.pricing_type, d.pricing_model, d.billable,
               d.at, d.changed
        FROM (SELECT DISTINCT ON (v.wamid) v.*,
                     -- the body itself prices the part twice, differently
                     min(v.pricing) OVER same_part <> max(v.pricing) OVER same_part AS changed
              FROM (SELECT i.*, concat_ws('|', i.category, coalesce(i.pricing_type, '-'),
                                          i.billable) AS pricing
                    FROM incoming i) AS v
              WHERE v.category IS NOT NULL AND v.billable IS NOT NULL
              WINDOW same_part AS (PARTITION BY v.wamid)
              ORDER BY v.wamid, v.n) AS d
        ORDER BY d.wamid
        ON CONFLICT (wamid) DO UPDATE SET changed = true
        WHERE NOT c.changed
          AND (c.category, c.pricing_type, c.billable)
              IS DISTINCT FROM (excluded.category, excluded.pricing_type, excluded.billable)
        RETURNING c.xmax = 0 AS inserted, c.message_id, c.country, c.category, c.billable,
                  c.pricing_type, c.billed_at),
    new_inbound AS (
        INSERT INTO outbox_inbound (wamid, phone_number_id, customer, user_id, type, at,
                                    error_code, error_title)
        SELECT v.wamid, v.phone, v.customer, v.user_id, v.type, v.at, v.code, v.title
        FROM unnest(CAST(:inbound_wamids AS text[]), CAST(:inbound_phones AS text[]),
                    CAST(:inbound_customers AS text[]), CAST(:inbound_user_ids AS text[]),
                    CAST(:inbound_types AS text[]), CAST(:inbound_ats AS timestamptz[]),
                    CAST(:inbound_codes AS int[]), CAST(:inbound_titles AS text[]))
             AS v(wamid, phone, customer, user_id, type, at, code, title)
        ON CONFLICT (wamid) DO NOTHING
        RETURNING id),
    new_errors AS (
        INSERT INTO outbox_webhook_errors (phone_number_id, code, title, detail)
        SELECT v.phone, v.code, v.title, v.detail
        FROM unnest(CAST(:error_phones AS text[]), CAST(:error_codes AS int[]),
                    CAST(:error_titles AS text[]), CAST(:error_details AS text[]))
             AS v(phone, code, title, detail)
        RETURNING id),
    body AS (
        UPDATE outbox_webhooks SET applied_at = now() WHERE id = :webhook_id RETURNING id)
    SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM new_statuses), '{}') AS status_ids,
           (SELECT count(*) FROM new_inbound) AS inbound,
           (SELECT count(*) FROM new_errors) AS errors,
           (SELECT count(*) FROM body) AS bodies,
           coalesce((SELECT jsonb_agg(jsonb_build_array(n.country, n.category, n.billed_at))
                     FROM new_costs n
                     WHERE n.inserted AND n.message_id IS NOT NULL AND n.billable
                       AND n.pricing_type = 'regular'), '[]') AS charged
    """
)


def row_of_last_part(wamid: str) -> str:
    """The row whose last part was accepted as `wamid` (an SQL expression) or null: the daemon
    records a last part's wamid as the row's message_id alone, each earlier part's in
    outbox_part_wamids too (RECORD_PARTS)."""
    return (
        "(SELECT r.id FROM outbox_messages r "
        f"WHERE r.message_id = {wamid} ORDER BY r.id DESC LIMIT 1)"
    )


# The statuses of a batch (the CTE `batch`), applied. A status finds its part by our callback
# data, else by its wamid: a row's last part's is the row's message_id, each earlier recorded
# part's is in outbox_part_wamids (RECORD_PARTS). Each gets an outcome:
#   applied     its part holds its wamid: merged into the part and the row, and an event appended
#   other_copy  the part holds another wamid (a copy of a resent part): stored, nothing changed
#   no_row      our callback data names a row that does not exist (pruned): nothing changed
#   waiting     the part is not recorded yet (or no part has the wamid): left unapplied, until
#               the daemon records that wamid (see RECORD_PARTS)
# The row's status follows its parts only while it is sent, delivered or read (the least advanced
# part, never backwards); a part failing fails the row unless the row is cancelled: a row waiting
# for a retry (pending) sends nothing more. A failed part stays failed, and a failed status for a
# delivered or read part changes nothing. Statuses without a rank (played, deleted, warning) and
# statuses after a failure go to the history only.
_APPLY = f"""
    WITH batch AS ({{batch}}),
    located AS (
        SELECT b.*,
               coalesce(b.message_id, w.message_id, {row_of_last_part("b.wamid")}) AS row_id,
               CASE WHEN b.message_id IS NOT NULL THEN b.part ELSE w.part END AS known_part
        FROM batch b LEFT JOIN outbox_part_wamids w ON b.message_id IS NULL
                                                  AND w.wamid = b.wamid),
    locked AS (
        SELECT m.id, m.parts FROM outbox_messages m
        WHERE m.id = ANY(ARRAY(SELECT l.row_id FROM located l))
        ORDER BY m.id
        FOR UPDATE),
    judged AS (
        SELECT l.*, p.at_part,
               CASE WHEN k.id IS NULL AND l.message_id IS NOT NULL THEN 'no_row'
                    WHEN k.id IS NULL OR p.at_part < 0
                         OR p.at_part >= jsonb_array_length(k.parts) THEN 'waiting'
                    WHEN k.parts -> p.at_part ->> 'wamid' IS DISTINCT FROM l.wamid
                         THEN 'other_copy'
                    ELSE 'applied' END AS outcome
        FROM located l
        LEFT JOIN locked k ON k.id = l.row_id
        -- A row found by its message_id: the wamid of its last part.
        CROSS JOIN LATERAL (SELECT coalesce(l.known_part, jsonb_array_length(k.parts) - 1)
                                AS at_part) p),
    -- A batch holds a part's statuses in arrival (id) order: those after its first failed one
    -- count as if applied later (history only), exactly as when applied one by one.
    first_failed AS (
        SELECT j.row_id, j.at_part, j.wamid, min(j.id) AS failed_id
        FROM judged j WHERE j.outcome = 'applied' AND j.status = 'failed'
        GROUP BY j.row_id, j.at_part, j.wamid),
    hits AS (
        SELECT j.row_id, j.at_part AS part, j.wamid,
               max(CASE j.status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                   END) FILTER (WHERE f.failed_id IS NULL OR j.id < f.failed_id) AS rank,
               min(j.at) FILTER (WHERE j.status IN ('delivered', 'read')
                                   AND (f.failed_id IS NULL OR j.id < f.failed_id))
                   AS delivered_at,
               min(j.at) FILTER (WHERE j.status = 'read'
                                   AND (f.failed_id IS NULL OR j.id < f.failed_id)) AS read_at,
               min(f.failed_id) AS failed_id
        FROM judged j
        LEFT JOIN first_failed f ON f.row_id = j.row_id AND f.at_part = j.at_part
                                AND f.wamid = j.wamid
        WHERE j.outcome = 'applied'
        GROUP BY j.row_id, j.at_part, j.wamid),
    updated AS (
        UPDATE outbox_messages m
        SET (parts, status, error_code, last_error, locked_until, lease_token, delivered_at,
             read_at, updated_at) = (
            SELECT n.parts, n.status,
                   CASE WHEN n.fails THEN n.error_code ELSE m.error_code END,
                   CASE WHEN n.fails THEN n.last_error ELSE m.last_error END,
                   m.locked_until,
                   m.lease_token,
                   CASE WHEN n.status IN ('delivered', 'read')
                        THEN coalesce(n.delivered_at, m.delivered_at) ELSE m.delivered_at END,
                   CASE WHEN n.status = 'read' THEN coalesce(n.read_at, m.read_at)
                        ELSE m.read_at END,
                   CASE WHEN n.parts = m.parts AND n.status = m.status THEN m.updated_at
                        ELSE now() END
            FROM (
                SELECT s.*, s.status = 'failed' AND (s.new_failure IS NOT NULL
                                                     OR m.status <> 'failed') AS fails,
                       (s.parts -> coalesce(s.new_failure, s.old_failure) ->> 'error_code')::int
                           AS error_code,
                       coalesce(nullif(concat_ws(' ',
                           '(#' || (s.parts -> coalesce(s.new_failure, s.old_failure)
                                    ->> 'error_code') || ')',
                           s.parts -> coalesce(s.new_failure, s.old_failure) ->> 'error'), ''),
                           'failed') AS last_error
                FROM (
                    SELECT a.*,
                           CASE WHEN a.new_failure IS NOT NULL AND m.status IN
                                     ('pending', 'sending', 'sent', 'delivered', 'read',
                                      'failed')
                                THEN 'failed'
                                WHEN m.status NOT IN ('sent', 'delivered', 'read') THEN m.status
                                WHEN a.old_failure IS NOT NULL THEN 'failed'
                                ELSE (ARRAY['sent', 'delivered', 'read'])[greatest(
                                    a.least_rank,
                                    CASE m.status WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                                    ELSE 1 END)]
                           END AS status
                    FROM (
                        SELECT coalesce(jsonb_agg(x.part ORDER BY x.i), '[]') AS parts,
                               coalesce(min(CASE x.part ->> 'status' WHEN 'failed' THEN NULL
                                            WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                                            ELSE 1 END), 1) AS least_rank,
                               min(x.i::int - 1) FILTER (WHERE x.fails) AS new_failure,
                               min(x.i::int - 1) FILTER (WHERE x.part ->> 'status' = 'failed')
                                   AS old_failure,
                               max((x.part ->> 'delivered_at')::timestamptz) AS delivered_at,
                               max((x.part ->> 'read_at')::timestamptz) AS read_at
                        FROM (
                            SELECT p.i, g.fails,
                                   CASE WHEN NOT r.touched THEN p.old
                                        WHEN g.fails THEN p.old || jsonb_strip_nulls(
                                            jsonb_build_object(
                                                'status', 'failed', 'error_code', f.error_code,
                                                'error', f.error_title, 'failed_at', f.at))
                                        ELSE p.old || jsonb_strip_nulls(jsonb_build_object(
                                            'status',
                                            (ARRAY['sent', 'delivered', 'read'])[r.rank],
                                            'delivered_at', least(
                                                (p.old ->> 'delivered_at')::timestamptz,
                                                h.delivered_at),
                                            'read_at', least((p.old ->> 'read_at')::timestamptz,
                                                             h.read_at)))
                                   END AS part
                            FROM jsonb_array_elements(m.parts) WITH ORDINALITY AS p(old, i)
                            LEFT JOIN hits h ON h.row_id = m.id AND h.part = p.i - 1
                                            AND h.wamid = p.old ->> 'wamid'
                            LEFT JOIN judged f ON f.id = h.failed_id
                            CROSS JOIN LATERAL (
                                SELECT h.row_id IS NOT NULL
                                       AND p.old ->> 'status' IS DISTINCT FROM 'failed'
                                           AS touched,
                                       greatest(CASE p.old ->> 'status' WHEN 'delivered' THEN 2
                                                WHEN 'read' THEN 3 ELSE 1 END,
                                                coalesce(h.rank, 1)) AS rank) r
                            CROSS JOIN LATERAL (
                                SELECT r.touched AND f.id IS NOT NULL AND r.rank < 2 AS fails) g
                        ) x
                    ) a
                ) s
            ) n)
        FROM (SELECT DISTINCT h.row_id FROM hits h) t
        WHERE m.id = t.row_id
        RETURNING m.id, m.parts, m.status),
    appended AS (
        INSERT INTO outbox_events (message_id, part, kind, error_code, detail, at)
        SELECT j.row_id, j.at_part, 'status:' || j.status, j.error_code, j.error_title, j.at
        FROM judged j
        WHERE j.outcome = 'applied' AND j.row_id IN (SELECT u.id FROM updated u)
        ORDER BY j.id
        RETURNING 1),
    marked AS (
        UPDATE outbox_statuses s
        SET applied_at = now(), message_id = coalesce(j.row_id, s.message_id),
            part = coalesce(j.at_part, s.part)
        FROM judged j
        WHERE s.id = j.id AND j.outcome <> 'waiting'
        RETURNING s.id)
    SELECT j.id, j.wamid, j.status, j.outcome, j.row_id, j.at_part AS part,
           u.status AS row_status,
           j.status = 'failed' AND j.outcome = 'applied'
               AND u.parts -> j.at_part ->> 'status' IS DISTINCT FROM 'failed' AS ignored
    FROM judged j LEFT JOIN updated u ON u.id = j.row_id
    ORDER BY j.id
"""

_BATCH_COLUMNS = "s.id, s.wamid, s.message_id, s.part, s.status, s.at, s.error_code, s.error_title"

# Apply the given statuses (those just stored by a request).
APPLY_STATUSES = sa.text(
    _APPLY.format(
        batch=f"""
        SELECT {_BATCH_COLUMNS} FROM outbox_statuses s
        WHERE s.id = ANY(CAST(:ids AS bigint[])) AND s.applied_at IS NULL
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED"""
    )
)

# Mark the rows that statuses of this transaction left waiting (their part is not recorded yet),
# under the lock APPLY took: the daemon recording the part meets the mark (RECORD_PARTS), and the
# receiver's sweep finds them until nothing waits.
FLAG_WAITING_ROWS = sa.text(
    """
    UPDATE outbox_messages SET statuses_waiting = true
    WHERE id = ANY(CAST(:row_ids AS bigint[])) AND NOT statuses_waiting
    RETURNING id
    """
)

# The unapplied statuses of marked rows (by our callback data or by a recorded part's wamid),
# applied: the sweep after a daemon recorded parts and stopped before applying what waited.
APPLY_MARKED = sa.text(
    _APPLY.format(
        batch=f"""
        SELECT {_BATCH_COLUMNS} FROM outbox_statuses s
        WHERE s.applied_at IS NULL
          AND (s.message_id = ANY(CAST(:row_ids AS bigint[]))
               OR s.wamid IN (SELECT w.wamid FROM outbox_part_wamids w
                              WHERE w.message_id = ANY(CAST(:row_ids AS bigint[])))
               OR s.wamid IN (SELECT m.message_id FROM outbox_messages m
                              WHERE m.id = ANY(CAST(:row_ids AS bigint[]))))
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED"""
    )
)

# Up to :limit marked rows, oldest first.
MARKED_ROWS = sa.text(
    """
    SELECT id FROM outbox_messages WHERE statuses_waiting AND id > :after ORDER BY id LIMIT :limit
    """
)

# Unmark the given rows where nothing waits any more: no unapplied status names them, or none can
# ever apply (the row is finished and no daemon holds it, so no part will be recorded). A row whose
# message_id is set had its last part recorded: it is finished, so that wamid needs no look here.
UNMARK_ROWS = sa.text(
    """
    UPDATE outbox_messages m SET statuses_waiting = false
    WHERE m.id = ANY(CAST(:row_ids AS bigint[])) AND m.statuses_waiting
      AND ((m.status NOT IN ('pending', 'sending') AND m.lease_token IS NULL)
           OR NOT EXISTS (
               SELECT 1 FROM outbox_statuses s
               WHERE s.applied_at IS NULL
                 AND (s.message_id = m.id
                      OR s.wamid IN (SELECT w.wamid FROM outbox_part_wamids w
                                     WHERE w.message_id = m.id))))
    RETURNING m.id
    """
)

# Waiting statuses received after the :after watermark, at least :settle seconds ago, oldest
# first, for one more look each: a status and the daemon's record of its part, written at the same
# moment, can each miss the other. Every other waiting status is applied when its part is recorded
# (RECORD_PARTS), so this costs one look per status however many wait for parts that never come
# (another integration's messages on the same number).
RECHECK_WAITING = sa.text(
    """
    SELECT id FROM outbox_statuses
    WHERE applied_at IS NULL AND id > :after
      AND received_at <= now() - make_interval(secs => :settle)
    ORDER BY id
    LIMIT :limit
    """
)

# Where a receiver starting now resumes its second looks: just before the oldest status still
# waiting from the last :horizon seconds, else the newest status.
WAITING_WATERMARK = sa.text(
    """
    SELECT coalesce(
        (SELECT min(id) - 1 FROM outbox_statuses
         WHERE applied_at IS NULL AND received_at > now() - make_interval(secs => :horizon)),
        (SELECT max(id) FROM outbox_statuses),
        0) AS after
    """
)

# The oldest stored body not applied yet (its application failed), locked for this transaction.
NEXT_UNAPPLIED_WEBHOOK = sa.text(
    f"""
    SELECT id, body FROM outbox_webhooks
    WHERE applied_at IS NULL AND received_at > now() - {MAX_WAIT}
      AND id <> ALL(CAST(:skip AS bigint[]))
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
    """
)

# Delete up to :batch applied bodies received before :cutoff.
PRUNE_WEBHOOKS = sa.text(
    """
    DELETE FROM outbox_webhooks
    WHERE id IN (SELECT id FROM outbox_webhooks
                 WHERE applied_at IS NOT NULL AND received_at < :cutoff
                 ORDER BY id LIMIT :batch)
    RETURNING id
    """
)

# Delete up to :batch statuses received before :cutoff that are applied, or that waited past
# MAX_WAIT for a part that never came (they can no longer apply).
PRUNE_STATUSES = sa.text(
    f"""
    DELETE FROM outbox_statuses
    WHERE id IN (SELECT id FROM outbox_statuses
                 WHERE received_at < :cutoff
                   AND (applied_at IS NOT NULL OR received_at < now() - {MAX_WAIT})
                 ORDER BY id LIMIT :batch)
    RETURNING id
    """
)


# Delete up to :batch errors Meta reported about numbers or the app, received before :cutoff.
PRUNE_WEBHOOK_ERRORS = sa.text(
    """
    DELETE FROM outbox_webhook_errors
    WHERE id IN (SELECT id FROM outbox_webhook_errors WHERE received_at < :cutoff
                 ORDER BY received_at LIMIT :batch)
    RETURNING id
    """
)


async def insert_webhook(conn: AsyncConnectionLike, body: bytes) -> int:
    row = await fetch_one(conn, INSERT_WEBHOOK, {"body": body})
    assert row is not None
    return int(row["id"])


async def set_lock_timeout(conn: AsyncConnectionLike, seconds: float) -> None:
    """Bound lock waits for the rest of the transaction (or savepoint)."""
    await fetch_all(conn, SET_LOCK_TIMEOUT, {"lock_timeout": f"{int(seconds * 1000)}ms"})


async def store_contents(
    conn: AsyncConnectionLike,
    webhook_id: int,
    statuses: list[dict[str, Any]],
    inbound: list[dict[str, Any]],
    errors: list[dict[str, Any]] | None = None,
    charged: list[tuple[str | None, str, datetime]] | None = None,
) -> list[int]:
    """Store a body's statuses, inbound messages and reported errors and mark it applied; the
    new status ids. `charged`, if given, gets (country, category, billed_at) of each part of
    ours the body newly showed charged (outbox.cost.pricing). Each status is a dict of wamid,
    installation, row_id, part, status, at, code, title, recipient (and may carry the
    PRICING_FIELDS); each inbound message one of wamid, phone, customer, user_id, type, at,
    code, title; each error one of phone, code, title, detail."""

    def column(items: list[dict[str, Any]], name: str) -> list[Any]:
        return [item[name] for item in items]

    params: dict[str, Any] = {"webhook_id": webhook_id}
    for name in ("wamid", "installation", "row_id", "part", "at", "code", "title", "recipient"):
        params[f"{name}s"] = column(statuses, name)
    for name in PRICING_FIELDS:  # absent: the status carries no pricing
        params[f"priced_{name}"] = [item.get(name) for item in statuses]
    params["statuses"] = column(statuses, "status")
    for name in ("wamid", "phone", "customer", "user_id", "type", "at", "code", "title"):
        params[f"inbound_{name}s"] = column(inbound, name)
    for name in ("phone", "code", "title", "detail"):
        params[f"error_{name}s"] = column(errors or [], name)
    row = await fetch_one(conn, STORE_CONTENTS, params)
    assert row is not None
    if charged is not None:
        charged.extend(
            (country, str(category), datetime.fromisoformat(billed_at))
            for country, category, billed_at in row["charged"]
        )
    return [int(status_id) for status_id in row["status_ids"]]


async def apply_statuses(conn: AsyncConnectionLike, ids: list[int]) -> list[Row]:
    """Apply the given unapplied statuses and mark the rows of those left waiting; one row per
    status with its outcome. Run it in a transaction: the mark goes with the statuses."""
    if not ids:
        return []
    results = await fetch_all(conn, APPLY_STATUSES, {"ids": ids})
    await _mark_waiting(conn, results)
    return results


async def apply_marked(conn: AsyncConnectionLike, row_ids: list[int]) -> list[Row]:
    """Apply what waits for the given marked rows (in a transaction, as apply_statuses)."""
    if not row_ids:
        return []
    results = await fetch_all(conn, APPLY_MARKED, {"row_ids": row_ids})
    await _mark_waiting(conn, results)
    return results


async def _mark_waiting(conn: AsyncConnectionLike, results: list[Row]) -> None:
    waiting = sorted(
        {int(r["row_id"]) for r in results if r["outcome"] == "waiting" and r["row_id"]}
    )
    if waiting:
        await fetch_all(conn, FLAG_WAITING_ROWS, {"row_ids": waiting})


async def marked_rows(conn: AsyncConnectionLike, after: int, limit: int) -> list[int]:
    rows = await fetch_all(conn, MARKED_ROWS, {"after": after, "limit": limit})
    return [int(row["id"]) for row in rows]


async def unmark_rows(conn: AsyncConnectionLike, row_ids: list[int]) -> None:
    await fetch_all(conn, UNMARK_ROWS, {"row_ids": row_ids})


async def recheck_waiting(
    conn: AsyncConnectionLike, after: int, settle: float, limit: int
) -> list[int]:
    """Up to `limit` waiting statuses past the `after` watermark, received `settle` seconds ago
    or more, for a second look."""
    rows = await fetch_all(
        conn, RECHECK_WAITING, {"after": after, "settle": settle, "limit": limit}
    )
    return [int(row["id"]) for row in rows]


async def waiting_watermark(conn: AsyncConnectionLike, horizon: float) -> int:
    row = await fetch_one(conn, WAITING_WATERMARK, {"horizon": horizon})
    assert row is not None
    return int(row["after"])


async def next_unapplied_webhook(
    conn: AsyncConnectionLike, skip: list[int]
) -> tuple[int, bytes] | None:
    """The oldest unapplied body (locked until the transaction ends), or None."""
    row = await fetch_one(conn, NEXT_UNAPPLIED_WEBHOOK, {"skip": skip})
    return None if row is None else (int(row["id"]), bytes(row["body"]))


async def prune_webhooks(conn: AsyncConnectionLike, cutoff: datetime, batch: int) -> bool:
    """Delete up to `batch` applied bodies, as many finished statuses and as many reported
    errors received before `cutoff`; True while there may be more."""
    params = {"cutoff": cutoff, "batch": batch}
    deleted = [
        await fetch_all(conn, statement, params)
        for statement in (PRUNE_WEBHOOKS, PRUNE_STATUSES, PRUNE_WEBHOOK_ERRORS)
    ]
    return any(len(rows) >= batch for rows in deleted)
