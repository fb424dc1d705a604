"""Every SQL statement `outbox` runs, each with a one-line description.

Statements are SQLAlchemy Core built once at import; bind parameters carry plain values (JSON is
cast in SQL) so they run unchanged on SQLAlchemy and raw asyncpg connections. All timestamps come
from the database's now(), never the client's clock. `messages` holds what apps and the CLI run,
`delivery` what the daemon runs.
"""

from outbox.store.delivery import (
    APPEND_EVENTS,
    BACKLOG_GAUGES,
    CLAIM_BATCH,
    EXPIRE_PENDING,
    EXTEND_LEASES,
    FINISH_ACCEPTED,
    FORGET_DAEMON,
    HAS_UNFINISHED_WORK,
    MARK_FAILED,
    PRUNE_PAIRS,
    RECONCILED_WAMID,
    RECORD_PARTS,
    RELEASE,
    RELEASE_LANES,
    RESCHEDULE,
    SAVE_DAEMON_STATE,
    SECONDS_TO_NEXT_DUE,
)
from outbox.store.intake import insert_webhooks, next_unapplied_webhooks, ping
from outbox.store.limits import SLOW_DOWN, TAKE_TOKENS
from outbox.store.messages import (
    INSERT_MESSAGE,
    backlog_stats,
    cancel_pending,
    insert_message,
    insert_message_sync,
    prune_finished,
    retry_failed,
    select_events,
    select_message,
    select_messages,
)
from outbox.store.webhooks import (
    apply_statuses,
    apply_waiting,
    insert_webhook,
    next_unapplied_webhook,
    prune_webhooks,
    select_waiting,
    set_lock_timeout,
    store_contents,
)

__all__ = [
    "APPEND_EVENTS",
    "BACKLOG_GAUGES",
    "CLAIM_BATCH",
    "EXPIRE_PENDING",
    "EXTEND_LEASES",
    "FINISH_ACCEPTED",
    "FORGET_DAEMON",
    "HAS_UNFINISHED_WORK",
    "INSERT_MESSAGE",
    "MARK_FAILED",
    "PRUNE_PAIRS",
    "RECONCILED_WAMID",
    "RECORD_PARTS",
    "RELEASE",
    "RELEASE_LANES",
    "RESCHEDULE",
    "SAVE_DAEMON_STATE",
    "SECONDS_TO_NEXT_DUE",
    "SLOW_DOWN",
    "TAKE_TOKENS",
    "apply_statuses",
    "apply_waiting",
    "backlog_stats",
    "cancel_pending",
    "insert_message",
    "insert_message_sync",
    "insert_webhook",
    "insert_webhooks",
    "next_unapplied_webhook",
    "next_unapplied_webhooks",
    "ping",
    "prune_finished",
    "prune_webhooks",
    "retry_failed",
    "select_events",
    "select_message",
    "select_messages",
    "select_waiting",
    "set_lock_timeout",
    "store_contents",
]
