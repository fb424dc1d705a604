"""enqueue() and enqueue_sync(): validate, then insert inside the caller's transaction.

Never commits: the row becomes visible to the daemon exactly when the caller's transaction does,
and a rollback leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from outbox import store
from outbox.connections import AsyncConnectionLike, SyncConnectionLike, transaction_problem
from outbox.database import causes
from outbox.errors import InvalidMessage, NotInTransaction, SchemaMissing
from outbox.policy import catalogue
from outbox.policy.quiet import checked_row_quiet
from outbox.store import templates_catalogue
from outbox.templates import Template, template_category, template_object
from outbox.validation import NewMessage, validate

MediaUrls = Mapping[str, Sequence[str]] | Sequence[Mapping[str, str]]


async def enqueue(
    conn: AsyncConnectionLike,
    recipient: str,
    message: str | None = None,
    *,
    media_urls: MediaUrls | None = None,
    template: Template | None = None,
    sender: str | None = None,
    idempotency_key: str | None = None,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
    fallback: Template | None = None,
    reference: str | None = None,
    quiet_hours: str | None = None,
    timezone: str | None = None,
) -> int:
    """Add a message to the outbox in the caller's transaction and return its id.

    `conn` is a SQLAlchemy AsyncSession or AsyncConnection, or an asyncpg Connection. A message
    is text and/or media, or a `template` alone, sent from `sender` (a phone number id; None:
    META_PHONE_NUMBER_ID). Raises InvalidMessage, before any insert, when
    an argument breaks a rule, NotInTransaction when `conn` would commit the row at once (an
    asyncpg connection outside `conn.transaction()`, or autocommit), and SchemaMissing when the
    outbox tables are not there. A message still unsent at `expires_at` fails as expired
    instead of going out late. `fallback` (a Template, for text or media only) goes out instead
    when the customer-service window is closed at send time; without one such a row fails
    `window_closed` (outbox/policy/). A template whose name is in the catalogue
    (`outbox templates sync`) must be there in its language, APPROVED, with as many body
    parameters. `reference` is the app's own name for the row
    (`booking-1234`, at most 255 characters), to find it by in `outbox dashboard`.
    `quiet_hours` (`"21:00-09:00"`, or `"none"` for any hour) and `timezone` (an IANA name,
    `"Europe/Madrid"`) are the row's own, instead of the daemon's `--quiet-hours` and the
    zones of the recipient's number; `expires_at` still wins.

    Through PgBouncer in transaction mode, `conn` must not keep prepared statements on the server:
    on asyncpg (directly or under SQLAlchemy) open it with `statement_cache_size=0`, and give
    SQLAlchemy's engine `prepared_statement_name_func=lambda: ""` too when asyncpg is older
    than 0.31.
    """
    new = _checked(
        recipient,
        message,
        media_urls,
        template,
        sender,
        idempotency_key,
        send_at,
        expires_at,
        fallback,
        reference,
        quiet_hours,
        timezone,
    )
    _in_transaction(conn)
    try:
        if isinstance(template, Template):
            rows = await templates_catalogue.select_by_name(conn, template.name)
            catalogue.check(template.name, template.language, _body_count(template), rows)
        return await store.insert_message(conn, new)
    except Exception as exc:
        _raise_if_schema_missing(exc)
        raise


def enqueue_sync(
    conn: SyncConnectionLike,
    recipient: str,
    message: str | None = None,
    *,
    media_urls: MediaUrls | None = None,
    template: Template | None = None,
    sender: str | None = None,
    idempotency_key: str | None = None,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
    fallback: Template | None = None,
    reference: str | None = None,
    quiet_hours: str | None = None,
    timezone: str | None = None,
) -> int:
    """enqueue() for a synchronous SQLAlchemy Session or Connection, on any driver."""
    new = _checked(
        recipient,
        message,
        media_urls,
        template,
        sender,
        idempotency_key,
        send_at,
        expires_at,
        fallback,
        reference,
        quiet_hours,
        timezone,
    )
    _in_transaction(conn)
    try:
        if isinstance(template, Template):
            rows = templates_catalogue.select_by_name_sync(conn, template.name)
            catalogue.check(template.name, template.language, _body_count(template), rows)
        return store.insert_message_sync(conn, new)
    except Exception as exc:
        _raise_if_schema_missing(exc)
        raise


def _body_count(template: Template) -> int | None:
    """How many body parameters the template gives; None when it brings its own components."""
    return None if template.components is not None else len(template.body_params)


def _in_transaction(conn: object) -> None:
    problem = transaction_problem(conn)
    if problem is not None:
        raise NotInTransaction(problem)


def _raise_if_schema_missing(exc: BaseException) -> None:
    """An insert into a table that does not exist (SQLSTATE 42P01) says what to run."""
    for cause in causes(exc):
        if (getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)) == "42P01":
            raise SchemaMissing from exc


def _checked(
    recipient: object,
    message: object,
    media_urls: object,
    template: object,
    sender: object,
    idempotency_key: object,
    send_at: object,
    expires_at: object,
    fallback: object = None,
    reference: object = None,
    quiet_hours: object = None,
    timezone: object = None,
) -> NewMessage:
    new = validate(
        recipient,
        message,
        media_urls=media_urls,
        idempotency_key=idempotency_key,
        send_at=send_at,
        expires_at=expires_at,
        template_json=None if template is None else template_object(template),
        sender=sender,
        reference=reference,
    )
    return replace(
        new, **_categorised(template, fallback), **checked_row_quiet(quiet_hours, timezone)
    )


def _categorised(template: object, fallback: object) -> dict[str, Any]:
    """The fallback as Meta's object and the category of the template (or of the fallback)."""
    if template is not None:
        assert isinstance(template, Template)  # template_object() checked it
        if fallback is not None:
            raise InvalidMessage(
                "fallback", "only a text or media message takes a fallback", rule="exclusive"
            )
        return {"category": template_category(template)}
    if fallback is None:
        return {}
    try:
        checked = template_object(fallback)
        assert isinstance(fallback, Template)
        category = template_category(fallback)
    except InvalidMessage as exc:  # named as the fallback's, not a template's
        field = exc.field.replace("template", "fallback", 1)
        raise InvalidMessage(field, exc.text, rule=exc.rule) from None
    return {"fallback": checked, "category": category}
