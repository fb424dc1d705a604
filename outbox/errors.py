"""The exceptions `outbox` raises, each carrying the data a caller needs to act on it.

OutboxError
├── InvalidMessage (ValueError)      bad input to enqueue; names the field and the rule
├── MessageNotFound (LookupError)    no row with that id
├── ConfigurationError               missing or malformed settings, unsafe OUTBOX_HOME
└── StateConflict                    retry/cancel asked of a row in the wrong state
"""

from __future__ import annotations


class OutboxError(Exception):
    """The root of every error `outbox` raises on purpose."""


class InvalidMessage(OutboxError, ValueError):
    """Input that cannot become a message; nothing was written."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class MessageNotFound(OutboxError, LookupError):
    """No row has this id."""

    def __init__(self, message_id: int) -> None:
        super().__init__(f"message {message_id} not found")
        self.message_id = message_id


class ConfigurationError(OutboxError):
    """A setting is missing, malformed, or would be unsafe to use."""


class StateConflict(OutboxError):
    """The row is in a state that does not allow the requested change."""

    def __init__(self, message_id: int, status: str, rule: str) -> None:
        super().__init__(f"message {message_id} is {status}: {rule}")
        self.message_id = message_id
        self.status = status
