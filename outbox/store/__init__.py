"""Every SQL statement `outbox` runs, each with a one-line description.

Statements are SQLAlchemy Core built once at import; bind parameters carry plain values (JSON is
cast in SQL) so they run unchanged on SQLAlchemy and raw asyncpg connections. All timestamps come
from the database's now(), never the client's clock. `messages` holds what apps and the CLI run,
`delivery` what the daemon runs.
"""

from outbox.store.delivery import (
    CLAIM_BATCH,
    EXPIRE_PENDING,
    EXTEND_LEASES,
    FINISH_ACCEPTED,
    FORGET_DAEMON,
    HAS_UNFINISHED_WORK,
    MARK_FAILED,
    RECORD_PARTS,
    RELEASE,
    RESCHEDULE,
    SAVE_DAEMON_STATE,
    SECONDS_TO_NEXT_DUE,
)
from outbox.store.messages import (
    INSERT_MESSAGE,
    backlog_stats,
    cancel_pending,
    insert_message,
    insert_message_sync,
    prune_finished,
    retry_failed,
    select_message,
    select_messages,
)

__all__ = [
    "CLAIM_BATCH",
    "EXPIRE_PENDING",
    "EXTEND_LEASES",
    "FINISH_ACCEPTED",
    "FORGET_DAEMON",
    "HAS_UNFINISHED_WORK",
    "INSERT_MESSAGE",
    "MARK_FAILED",
    "RECORD_PARTS",
    "RELEASE",
    "RESCHEDULE",
    "SAVE_DAEMON_STATE",
    "SECONDS_TO_NEXT_DUE",
    "backlog_stats",
    "cancel_pending",
    "insert_message",
    "insert_message_sync",
    "prune_finished",
    "retry_failed",
    "select_message",
    "select_messages",
]
