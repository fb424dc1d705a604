"""The daemon's statements: claim, record parts, reschedule, fail, release, leases, expiry.

Every write after the claim names the claim's lease token, so a worker whose lease expired (and
whose row was claimed again) changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa

# Claim up to :limit due rows, oldest first, skipping rows locked by other daemons, rows this
# daemon is still sending (:tokens, its claims' lease tokens: a lease may have lapsed while the
# database was away, or by the database's clock when a statement arrives late; and :mine, its
# ids in flight, for a row another worker took over and gave back: it keeps taken_over until a
# part of it is recorded, so the ids are compared with taken_over rows alone; a row claimed
# again otherwise is one its older claim sends no more of, InFlight.start), rows
# of senders that are paused or held (:stopped; a null sender is :default_sender), and rows whose
# recipient has an older unfinished row from the same sender (per-lane FIFO). :only, when not
# null, claims that sender's rows alone (its probe); :fresh leaves out rows that failed before
# (a probe tries a row with no error of its own first). A row scheduled for later does not block; a
# row waiting for a retry (it has an error) does, unless it waits for its template Meta paused
# (132015, for hours: migration 0008) or for Meta's per-user marketing limit (131049, a day or
# more: migration 0021). A lease is claimable :grace seconds after it
# expired (its owner, cut off from the database for a moment, records what it sent first), and
# not at all while :takeover is false (just after an outage this daemon saw).
# The work is bounded: it looks at :window ready rows (index order, queued rows left out) and
# probes only those for an older unfinished row. The ones it finds blocked are marked
# `queued_behind`, off the ready index until a trigger clears the mark (migration 0004), unless
# they changed since this statement's snapshot (xmin): then the change may have freed them.
# Every returned row carries `marked`; when nothing is claimed but rows were marked, one row
# with a null id says so, and the daemon claims again at once.
# `expires_in` is the seconds left before the row's deadline (expires_at, else created_at plus
# :max_age when that is positive), null without one. `taken_over`: the row's lease ran out while
# another daemon held it, so that daemon may have sent the next part; kept on the row (a release
# does not clear it) until that part is recorded. `recipient_checked`: enqueue() checked this
# recipient (migration 0022), so the daemon need not check it again.
CLAIM_BATCH = sa.text(
    """
    WITH seen AS (
        SELECT w.id, w.xmin_text, w.taken_over, EXISTS (
            SELECT 1 FROM outbox_messages o
            WHERE o.recipient = w.recipient AND coalesce(o.sender, '') = w.sender_key
              AND o.id < w.id AND o.status IN ('pending', 'sending')
              AND (o.status = 'sending' OR o.available_at <= now() OR o.last_error IS NOT NULL)
              AND NOT (o.status = 'pending' AND coalesce(o.error_code, 0) IN (132015, 131049)
                       AND o.available_at > now())
        ) AS behind
        FROM ((SELECT c.id, c.recipient, coalesce(c.sender, '') AS sender_key,
                      c.xmin::text AS xmin_text, false AS taken_over
               FROM outbox_messages c
               WHERE c.status = 'pending' AND NOT c.queued_behind AND c.available_at <= now()
                 AND (NOT CAST(:fresh AS boolean) OR c.last_error IS NULL)
                 AND (NOT c.taken_over OR c.id <> ALL(CAST(:mine AS bigint[])))
                 AND coalesce(c.sender, :default_sender) <> ALL(CAST(:stopped AS text[]))
                 AND (CAST(:only AS text) IS NULL
                      OR coalesce(c.sender, :default_sender) = CAST(:only AS text))
               ORDER BY c.available_at, c.id
               LIMIT :window)
              UNION ALL
              (SELECT c.id, c.recipient, coalesce(c.sender, ''), c.xmin::text, true
               FROM outbox_messages c
               WHERE c.status = 'sending' AND CAST(:takeover AS boolean)
                 AND c.locked_until < now() - make_interval(secs => :grace)
                 AND NOT coalesce(c.lease_token = ANY(CAST(:tokens AS uuid[])), false)
                 AND coalesce(c.sender, :default_sender) <> ALL(CAST(:stopped AS text[]))
                 AND (CAST(:only AS text) IS NULL
                      OR coalesce(c.sender, :default_sender) = CAST(:only AS text))
               ORDER BY c.locked_until
               LIMIT :limit)) AS w
    ), marked AS (
        UPDATE outbox_messages m SET queued_behind = true
        FROM (SELECT x.id FROM outbox_messages x JOIN seen s ON s.id = x.id
              WHERE s.behind AND NOT s.taken_over AND x.status = 'pending'
                AND x.xmin::text = s.xmin_text
              FOR UPDATE OF x SKIP LOCKED) AS blocked
        WHERE m.id = blocked.id
        RETURNING m.id
    ), candidates AS (
        SELECT c.id, s.taken_over FROM outbox_messages c JOIN seen s ON s.id = c.id
        WHERE NOT s.behind
          AND ((c.status = 'pending' AND c.available_at <= now())
               OR (c.status = 'sending' AND c.locked_until < now()))
        ORDER BY c.id
        LIMIT :limit
        FOR UPDATE OF c SKIP LOCKED
    ), claimed AS (
        UPDATE outbox_messages m
        SET status = 'sending', attempts = m.attempts + 1, lease_token = :token,
            locked_until = now() + make_interval(secs => :lease), updated_at = now(),
            taken_over = m.taken_over OR candidates.taken_over
        FROM candidates WHERE m.id = candidates.id
        RETURNING m.id, m.recipient, m.sender, m.message,
                  NULLIF(m.media, '[]')::text AS media,  -- none: nothing to parse
                  m.template::text AS template, jsonb_array_length(m.parts) AS accepted,
                  m.attempts, m.in_doubt, m.taken_over,
                  coalesce(m.checked_recipient = m.recipient, false) AS recipient_checked,
                  (SELECT extract(epoch FROM l.tat - now()) FROM outbox_limits l
                   WHERE l.key = 'pair:' || coalesce(m.sender, :default_sender) || ':'
                                 || m.recipient) AS pair_due_in,
                  extract(epoch FROM coalesce(
                      m.expires_at,
                      CASE WHEN CAST(:max_age AS float8) > 0
                           THEN m.created_at + make_interval(secs => CAST(:max_age AS float8))
                      END) - now())
                      AS expires_in
    )
    SELECT claimed.*, (SELECT count(*) FROM marked) AS marked
    FROM (SELECT 1) AS one LEFT JOIN claimed ON true
    """
)

# The safety net of the lanes: a lane's first queued row that nothing holds back any more (its
# trigger-time release raced a claim's mark) is released. Every few seconds, reading only the
# queued rows' index.
RELEASE_LANES = sa.text(
    """
    UPDATE outbox_messages m SET queued_behind = false
    FROM (SELECT DISTINCT ON (recipient, coalesce(sender, '')) id, recipient,
                 coalesce(sender, '') AS sender_key
          FROM outbox_messages
          WHERE status = 'pending' AND queued_behind
          ORDER BY recipient, coalesce(sender, ''), id) AS first
    WHERE m.id = first.id AND m.queued_behind AND m.status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM outbox_messages o
          WHERE o.recipient = first.recipient AND coalesce(o.sender, '') = first.sender_key
            AND o.id < first.id
            AND o.status IN ('pending', 'sending')
            AND (o.status = 'sending' OR o.available_at <= now() OR o.last_error IS NOT NULL)
            AND NOT (o.status = 'pending' AND coalesce(o.error_code, 0) IN (132015, 131049)
                     AND o.available_at > now()))
    RETURNING m.id
    """
)

# Append each accepted part's wamid (batched across rows); the last part also finishes the row,
# clearing the errors it went through. A row a status webhook failed while it was sending (an
# earlier part could not be delivered) stays failed, but the parts Meta accepted meanwhile are
# still recorded: they must never be sent again. `going_on` is false for such a row only: a row
# its last part finished (now `sent`) went on as it should. Each part also advances its
# (sender, recipient) pair's pacing clock in outbox_limits (GCRA, one send per :pair_interval),
# so that whichever daemon sends that conversation's next row paces it from there (the claim
# returns `pair_due_in`): only one row of a lane is ever in flight, so the clock has one writer.
# Each wamid is made findable by status webhooks: the last part's by the row's message_id (and its
# index), each earlier one by an entry of its own in outbox_part_wamids. A row whose statuses wait
# for their parts says so (`statuses_waiting`: the receiver's mark, read from the row as this
# UPDATE finds it after any lock wait, or a status waiting for this wamid): the recorder then
# applies them, and the receiver's sweep does if the daemon stops first. A waiting status is
# matched when its part is recorded, never by rescans of every waiting status.
RECORD_PARTS = sa.text(
    """
    WITH recorded AS (
        UPDATE outbox_messages m
        SET parts = m.parts || jsonb_build_array(jsonb_build_object(
                'wamid', v.wamid, 'status', 'sent', 'sent_at', now())),
            status = CASE WHEN m.status = 'failed' THEN 'failed'
                          WHEN v.final THEN 'sent' ELSE m.status END,
            message_id = CASE WHEN v.final THEN v.wamid ELSE m.message_id END,
            sent_at = CASE WHEN v.final THEN now() ELSE m.sent_at END,
            last_error = CASE WHEN v.final AND m.status <> 'failed' THEN NULL
                              ELSE m.last_error END,
            error_code = CASE WHEN v.final AND m.status <> 'failed' THEN NULL
                              ELSE m.error_code END,
            locked_until = CASE WHEN v.final THEN NULL
                                ELSE now() + make_interval(secs => :lease) END,
            lease_token = CASE WHEN v.final THEN NULL ELSE m.lease_token END,
            taken_over = false,
            statuses_waiting = m.statuses_waiting OR EXISTS (
                SELECT 1 FROM outbox_statuses s
                WHERE s.wamid = v.wamid AND s.applied_at IS NULL),
            updated_at = now()
        FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]), CAST(:indexes AS int[]),
                    CAST(:wamids AS text[]), CAST(:finals AS boolean[]))
             AS v(id, token, index, wamid, final)
        -- Rows reached by id (the ANY), whatever the statistics say: taken while a backlog
        -- was all pending, they count no row in flight. Through the status index, or a scan,
        -- each write read every row in flight; and with the status test's selectivity read
        -- from them the rows look like one, and a nested loop compared each with every part.
        -- coalesce() hides the test from them, and is no index condition.
        WHERE m.id = ANY(CAST(:ids AS bigint[])) AND m.id = v.id AND m.lease_token = v.token
          AND coalesce(m.status IN ('sending', 'failed'), false)
          AND jsonb_array_length(m.parts) = v.index
        RETURNING m.id, m.recipient, coalesce(m.sender, :default_sender) AS sender,
                  m.status <> 'failed' AS going_on, m.statuses_waiting, v.wamid, v.index,
                  v.final
    ), findable AS (
        INSERT INTO outbox_part_wamids (wamid, message_id, part)
        SELECT r.wamid, r.id, r.index FROM recorded r WHERE NOT r.final
        ON CONFLICT (wamid) DO NOTHING
        RETURNING wamid
    ), paced AS (
        INSERT INTO outbox_limits AS l (key, tat)
        SELECT 'pair:' || r.sender || ':' || r.recipient,
               now() + make_interval(secs => :pair_interval * count(*))
        FROM recorded r GROUP BY r.sender, r.recipient
        ON CONFLICT (key) DO UPDATE
        SET tat = greatest(l.tat, now()) + (excluded.tat - now())
        RETURNING l.key
    )
    SELECT id, going_on, statuses_waiting, (SELECT count(*) FROM paced) AS paced,
           (SELECT count(*) FROM findable) AS findable
    FROM recorded
    """
)

# What became of parts the part record did not write: whether their row still exists, and
# whether it holds the part all the same (an earlier try of the same write committed and its
# answer was lost with the connection, or the daemon that took the row over recorded our wamid,
# reconciled from its status webhook).
REFUSED_PARTS = sa.text(
    """
    SELECT v.id, m.id IS NOT NULL AS exists,
           coalesce(m.parts -> v.index ->> 'wamid' = v.wamid, false) AS on_row
    FROM unnest(CAST(:ids AS bigint[]), CAST(:indexes AS int[]), CAST(:wamids AS text[]))
         AS v(id, index, wamid)
    LEFT JOIN outbox_messages m ON m.id = v.id
    """
)

# Old pair entries: past their burst's refill they pace nothing any more.
PRUNE_PAIRS = sa.text(
    """
    DELETE FROM outbox_limits
    WHERE key LIKE 'pair:%' AND tat < now() - make_interval(secs => :horizon)
    RETURNING key
    """
)

# A claimed row whose parts were all accepted earlier (a retried row): finish it as sent.
FINISH_ACCEPTED = sa.text(
    """
    UPDATE outbox_messages
    SET status = 'sent', message_id = parts -> -1 ->> 'wamid', sent_at = coalesce(sent_at, now()),
        last_error = NULL, error_code = NULL,
        locked_until = NULL, lease_token = NULL, updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'sending'
    RETURNING id
    """
)

# Back to pending after :delay seconds; :give_back returns the attempt (throttled, paused, in
# doubt); :doubt counts a send whose outcome is unknown.
RESCHEDULE = sa.text(
    """
    UPDATE outbox_messages
    SET status = 'pending', available_at = now() + make_interval(secs => :delay),
        attempts = greatest(attempts - :give_back, 0), in_doubt = in_doubt + :doubt,
        last_error = :error, error_code = :code,
        locked_until = NULL, lease_token = NULL, updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'sending'
    RETURNING id
    """
)

# The row can never be sent. A send in doubt is counted in in_doubt, not as an attempt.
MARK_FAILED = sa.text(
    """
    UPDATE outbox_messages
    SET status = 'failed', last_error = :error, error_code = :code,
        in_doubt = in_doubt + :doubt, attempts = greatest(attempts - :doubt, 0),
        locked_until = NULL, lease_token = NULL, updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'sending'
    RETURNING id
    """
)

# Give back one attempt per id (a row may be named more than once): failures that turned out
# to be an outage's first, which uses no attempts.
GIVE_BACK_ATTEMPTS = sa.text(
    """
    UPDATE outbox_messages m SET attempts = greatest(m.attempts - v.count, 0)
    FROM (SELECT id, count(*)::int AS count FROM unnest(CAST(:ids AS bigint[])) AS u(id)
          GROUP BY id) AS v
    WHERE m.id = v.id AND m.status IN ('pending', 'sending')
    RETURNING m.id
    """
)

# Rows failed for good by failures that turned out to be an outage's first: pending again, the
# attempt returned, unless changed since: retried, cancelled, failed for another reason (its
# last error is no longer that failure), or a part of theirs failed by Meta's status webhook.
UNDO_ONSET_FAILURES = sa.text(
    """
    UPDATE outbox_messages m
    SET status = 'pending', attempts = greatest(m.attempts - 1, 0), available_at = now(),
        error_code = NULL, last_error = 'waiting out an API outage: ' || coalesce(m.last_error, ''),
        updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS v(id, error)
    WHERE m.id = v.id AND m.status = 'failed' AND m.last_error = v.error
      AND NOT EXISTS (SELECT FROM jsonb_array_elements(m.parts) AS p(part)
                      WHERE p.part ->> 'status' = 'failed')
    RETURNING m.id
    """
)

# The claims' rows (:ids) while still under their lease (:tokens), as the part record reaches
# its own: by id, with a status test no statistics can make look like one row.
_LEASED = """FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS v(id, token)
    WHERE m.id = ANY(CAST(:ids AS bigint[])) AND m.id = v.id AND m.lease_token = v.token
      AND coalesce(m.status = 'sending', false)"""

# Give claimed rows back untouched (shutdown, pause, outage), returning their attempt.
RELEASE = sa.text(
    f"""
    UPDATE outbox_messages m
    SET status = 'pending', attempts = greatest(m.attempts - 1, 0),
        locked_until = NULL, lease_token = NULL, updated_at = now()
    {_LEASED}
    RETURNING m.id
    """
)

# Keep the leases of rows still being sent; the rows returned are still ours.
EXTEND_LEASES = sa.text(
    f"""
    UPDATE outbox_messages m
    SET locked_until = now() + make_interval(secs => :lease)
    {_LEASED}
    RETURNING m.id
    """
)

# Fail up to :batch pending rows whose expires_at has passed (rows past --max-age fail when
# claimed: that needs no scan). A row an earlier request of which may have been accepted (in
# doubt, taken over) is not said to be unsent: :doubtful says why; one with a status stored for
# its next part is left to its claim, which records that part if the status is the request's.
EXPIRE_PENDING = sa.text(
    """
    UPDATE outbox_messages
    SET status = 'failed',
        last_error = CASE WHEN in_doubt > 0 OR taken_over THEN 'expired: not sent again by '
                          ELSE 'expired: not sent by ' END
            || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            || CASE WHEN in_doubt > 0 OR taken_over THEN ' (' || :doubtful || ')' ELSE '' END,
        locked_until = NULL, lease_token = NULL, updated_at = now()
    WHERE id IN (SELECT id FROM outbox_messages
                 WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()
                   AND NOT ((in_doubt > 0 OR taken_over) AND EXISTS (
                       SELECT 1 FROM outbox_statuses s WHERE s.message_id = outbox_messages.id
                         AND s.part = jsonb_array_length(outbox_messages.parts)))
                 ORDER BY expires_at LIMIT :batch
                 FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)

# Anything left for a drain to wait for: rows in flight, due, or waiting for a retry, except
# those of :paused senders (an account error holds them until a probe succeeds).
HAS_UNFINISHED_WORK = sa.text(
    """
    SELECT EXISTS (
        SELECT 1 FROM outbox_messages
        WHERE (status = 'sending'
               OR (status = 'pending' AND (available_at <= now() OR last_error IS NOT NULL)))
          AND coalesce(sender, :default_sender) <> ALL(CAST(:paused AS text[])))
    """
)

# Seconds until something new can be claimed: a pending row falling due, or a lease running out
# (None when neither will happen). Rows already due but held behind an older row of their
# recipient do not count: they become claimable only when that row finishes or falls due.
SECONDS_TO_NEXT_DUE = sa.text(
    """
    SELECT extract(epoch FROM least(
        (SELECT min(available_at) FROM outbox_messages
         WHERE status = 'pending' AND available_at > now()),
        (SELECT min(locked_until) + make_interval(secs => :grace) FROM outbox_messages
         WHERE status = 'sending'
           AND locked_until > now() - make_interval(secs => :grace))) - now())
        AS seconds
    """
)

# The backlog, for the daemon's gauges every few seconds: rows pending (due or scheduled), and
# how long the oldest due one has waited (null when none is due). Both read the partial index on
# pending rows only, however many finished rows there are.
BACKLOG_GAUGES = sa.text(
    """
    SELECT (SELECT count(*) FROM outbox_messages WHERE status = 'pending') AS pending,
           extract(epoch FROM now() - (SELECT min(available_at) FROM outbox_messages
                                       WHERE status = 'pending' AND available_at <= now()))
               AS oldest_pending_seconds
    """
)

# Register or refresh this daemon's row: its state and a heartbeat.
SAVE_DAEMON_STATE = sa.text(
    """
    INSERT INTO outbox_daemons AS d (id, state, reason, state_since, held_until, in_flight,
                                     senders, heartbeat_at)
    VALUES (:daemon, :state, :reason, now(),
            CASE WHEN CAST(:held AS float8) > 0
                 THEN now() + make_interval(secs => CAST(:held AS float8)) END,
            :in_flight, CAST(:senders AS jsonb), now())
    ON CONFLICT (id) DO UPDATE
    SET state = excluded.state, reason = excluded.reason,
        state_since = CASE WHEN d.state = excluded.state AND d.reason IS NOT DISTINCT FROM
                                excluded.reason THEN d.state_since ELSE now() END,
        held_until = excluded.held_until, in_flight = excluded.in_flight,
        senders = excluded.senders, heartbeat_at = now()
    RETURNING id
    """
)

# A daemon that stops cleanly leaves no row; stale rows of crashed daemons go after a day.
FORGET_DAEMON = sa.text(
    """
    DELETE FROM outbox_daemons
    WHERE id = :daemon OR heartbeat_at < now() - interval '1 day'
    RETURNING id
    """
)

# Append history events in one statement; events of rows deleted meanwhile are skipped.
APPEND_EVENTS = sa.text(
    """
    WITH appended AS (
        INSERT INTO outbox_events (message_id, part, kind, http_status, error_code, detail,
                                   latency_ms)
        SELECT v.id, v.part, v.kind, v.status, v.code, v.detail, v.latency
        FROM unnest(CAST(:ids AS bigint[]), CAST(:parts AS int[]), CAST(:kinds AS text[]),
                    CAST(:statuses AS int[]), CAST(:codes AS int[]), CAST(:details AS text[]),
                    CAST(:latencies AS float8[]))
             WITH ORDINALITY AS v(id, part, kind, status, code, detail, latency, n)
        WHERE EXISTS (SELECT 1 FROM outbox_messages m WHERE m.id = v.id)
        ORDER BY v.n
        RETURNING 1)
    SELECT count(*) AS appended FROM appended
    """
)

# The status webhooks that name a part by our callback data (of this installation: the receiver
# stores another deployment's without a row) and come from after the row was created (with a
# margin for clocks: 2 minutes before, 10 after now): their wamid settles a send in doubt once
# their recipient is checked too (delivery/reconcile.py). Even `failed` says Meta accepted the
# request (and then could not deliver it).
RECONCILED_WAMID = sa.text(
    """
    SELECT s.wamid, s.recipient FROM outbox_statuses s
    JOIN outbox_messages m ON m.id = s.message_id
    WHERE s.message_id = :id AND s.part = :part
      AND s.at >= m.created_at - interval '2 minutes' AND s.at <= now() + interval '10 minutes'
    ORDER BY s.id
    """
)

# This database's installation id, for the callback data of every send.
INSTALLATION_ID = sa.text("SELECT id FROM outbox_installation LIMIT 1")
