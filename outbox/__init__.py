"""outbox: a transactional outbox for WhatsApp messages on PostgreSQL.

`import outbox` (for enqueue) loads neither the daemon nor aiohttp nor prometheus_client:
`Daemon` and `webhooks` are imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from outbox import webhooks
    from outbox.delivery.daemon import Daemon

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

_LAZY = {"Daemon": ("outbox.delivery.daemon", "Daemon"), "webhooks": ("outbox.webhooks", None)}


def __getattr__(name: str) -> Any:
    """`outbox.Daemon` and `outbox.webhooks`, imported the first time they are asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'outbox' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
