"""outbox: a transactional outbox for WhatsApp messages on PostgreSQL."""

from outbox import webhooks
from outbox.daemon import Daemon
from outbox.enqueue import enqueue, enqueue_sync
from outbox.errors import (
    ConfigurationError,
    InvalidMessage,
    MessageNotFound,
    NotInTransaction,
    OutboxError,
    SchemaMissing,
    StateConflict,
)
from outbox.policy import OptOut, Window, add_optout, list_optouts, remove_optout, window
from outbox.settings import Settings
from outbox.status import Delivery, Part, get_status, list_messages
from outbox.templates import Template

__all__ = [
    "ConfigurationError",
    "Daemon",
    "Delivery",
    "InvalidMessage",
    "MessageNotFound",
    "NotInTransaction",
    "OptOut",
    "OutboxError",
    "Part",
    "SchemaMissing",
    "Settings",
    "StateConflict",
    "Template",
    "Window",
    "add_optout",
    "enqueue",
    "enqueue_sync",
    "get_status",
    "list_messages",
    "list_optouts",
    "remove_optout",
    "webhooks",
    "window",
]
