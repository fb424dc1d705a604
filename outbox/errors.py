"""The exceptions `outbox` raises, each carrying the data a caller needs to act on it.

OutboxError
├── InvalidMessage (ValueError)      bad input to enqueue; names the field and the rule
├── MessageNotFound (LookupError)    no row with that id
├── ConfigurationError               missing or malformed settings, unsafe OUTBOX_HOME
│   └── SchemaMissing                the outbox tables are not there: run `outbox migrate`
└── StateConflict                    retry/cancel asked of a row in the wrong state
NotInTransaction (RuntimeError)      enqueue on a connection that would commit at once
SendError                            a part the Cloud API did not accept (see whatsapp_client.py)
├── GraphError                       Graph's error envelope, with its code
└── TransportError                   no usable answer: connection refused, 5xx HTML, ...
    └── InDoubt                      a timeout or a 200 without a usable id: maybe accepted

Every text that comes from outside (Meta's answers, driver errors) is cleaned by `clean()` before
it becomes part of an error: it may be stored, logged and printed.
"""

from __future__ import annotations

MAX_ERROR_LENGTH = 500


def clean(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """`text` safe to store, log and print: no NUL or other control characters, no lone
    surrogates, one line, at most `limit` characters."""
    if (
        len(text) <= limit
        and text.isprintable()  # no control character, surrogate or whitespace but " "
        and "  " not in text
        and text[:1] != " "
        and text[-1:] != " "
    ):
        return text  # already clean (a wamid, most answers): the same text the steps give
    text = " ".join(text[: limit * 4].encode("utf-8", "replace").decode("utf-8").split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OutboxError(Exception):
    """The root of every error `outbox` raises on purpose."""


class InvalidMessage(OutboxError, ValueError):
    """Input that cannot become a message; nothing was written. `field` names the input,
    `rule` is a stable id code can switch on (README: "Validation errors"), `text` says it in
    words (the message is `field: text`)."""

    def __init__(self, field: str, text: str, rule: str = "invalid") -> None:
        super().__init__(f"{field}: {text}")
        self.field = field
        self.text = text
        self.rule = rule


class MessageNotFound(OutboxError, LookupError):
    """No row has this id."""

    def __init__(self, message_id: int) -> None:
        super().__init__(f"message {message_id} not found")
        self.message_id = message_id


class ConfigurationError(OutboxError):
    """A setting is missing, malformed, or would be unsafe to use."""


class SchemaMissing(ConfigurationError):
    """The outbox tables are not in this database."""

    def __init__(self) -> None:
        super().__init__("the outbox schema is missing: run `outbox migrate` first")


class NotInTransaction(OutboxError, RuntimeError):
    """enqueue() was given a connection outside a transaction (or in autocommit): the row would
    be committed at once, apart from the caller's business change. Nothing was written."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"enqueue needs an open transaction, and this {kind} has none: the row would be "
            "committed on its own, apart from your change. Call it inside "
            "`async with conn.transaction():` (asyncpg) or `session.begin()` (SQLAlchemy)"
        )


class StateConflict(OutboxError):
    """The row is in a state that does not allow the requested change."""

    def __init__(self, message_id: int, status: str, rule: str) -> None:
        super().__init__(f"message {message_id} is {status}: {rule}")
        self.message_id = message_id
        self.status = status


class SendError(OutboxError):
    """The Cloud API did not accept a part. `retry_after` is Meta's Retry-After, if any."""

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        # A row failed by it says why: never an empty reason, whatever the answer held.
        unsaid = (
            "no reason given" if http_status is None else f"HTTP {http_status}, no reason given"
        )
        super().__init__(clean(message) or unsaid)
        self.http_status = http_status
        self.retry_after = retry_after


class GraphError(SendError):
    """An error answered in Graph's envelope: `{"error": {"code": …, "message": …}}`."""

    def __init__(
        self,
        *,
        http_status: int,
        code: int | None,
        message: str,
        subcode: int | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Meta writes "(#130429) Rate limit hit"; say the code once, in that form.
        text = message
        if code is not None and not message.startswith(f"(#{code})"):
            text = f"(#{code}) {message}"
        if details and details not in message:
            text = f"{text}: {details}"
        super().__init__(text, http_status=http_status, retry_after=retry_after)
        self.code = code
        self.subcode = subcode
        self.details = details
        self.fbtrace_id = fbtrace_id


class TransportError(SendError):
    """No usable answer: connection failure, timeout, or a body that is not a Graph answer."""


class InDoubt(TransportError):
    """The request reached Meta but its outcome is unknown (a timeout, a 200 without a usable
    id): the part may have been accepted, so it is never retried quickly. `answered`: something
    came back (a 2xx without a usable id, a malformed answer), so the API is up. `dropped`: the
    connection ended before any answer, which a front end closing connections unread does too."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        answered: bool = False,
        dropped: bool = False,
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.answered = answered or http_status is not None
        self.dropped = dropped
