"""outbox: a transactional outbox for WhatsApp messages on PostgreSQL."""

from outbox.enqueue import enqueue, enqueue_sync
from outbox.errors import (
    ConfigurationError,
    InvalidMessage,
    MessageNotFound,
    OutboxError,
    StateConflict,
)
from outbox.settings import Settings
from outbox.status import Delivery, Part, get_status, list_messages

__all__ = [
    "ConfigurationError",
    "Delivery",
    "InvalidMessage",
    "MessageNotFound",
    "OutboxError",
    "Part",
    "Settings",
    "StateConflict",
    "enqueue",
    "enqueue_sync",
    "get_status",
    "list_messages",
]
