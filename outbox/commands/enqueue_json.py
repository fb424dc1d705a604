"""`outbox enqueue --json`: messages as JSON, with the fields of the Python enqueue(), from an
argument or stdin: one object, a list of objects, or one object per line. All of them are
validated before any is inserted, and inserted in one transaction: all or none."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from outbox.arguments import UsageError
from outbox.enqueue import enqueue
from outbox.errors import InvalidMessage
from outbox.templates import Template

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


FIELDS = (
    "recipient",
    "message",
    "media_urls",
    "template",
    "sender",
    "idempotency_key",
    "send_at",
    "expires_at",
    "quiet_hours",
    "timezone",
)
TEMPLATE_FIELDS = ("name", "language", "body_params", "header_image", "components")
# The options of `outbox enqueue` that --json replaces (argparse dests and their flags).
_REPLACED = {
    "recipient": "RECIPIENT",
    "message": "MESSAGE",
    "image": "--image",
    "video": "--video",
    "document": "--document",
    "audio": "--audio",
    "template": "--template",
    "language": "--language",
    "body_param": "--body-param",
    "header_image": "--header-image",
    "sender": "--sender",
    "idempotency_key": "--idempotency-key",
    "send_at": "--send-at",
    "expires_in": "--expires-in",
    "quiet_hours": "--quiet-hours",
    "timezone": "--timezone",
}


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="DOCUMENT",
        help="the message(s) as JSON instead of the options above, from DOCUMENT or stdin: "
        "an object with the fields of Python's enqueue() (recipient, message, media_urls, "
        "template {name, language, body_params, header_image, components}, sender, "
        "idempotency_key, send_at, expires_at as ISO 8601, quiet_hours, timezone), a list "
        "of them, or one per line; "
        "prints one id per message, all inserted in one transaction or none",
    )


def check_usage(args: argparse.Namespace) -> None:
    if args.json is None:
        if args.recipient is None:
            raise UsageError("outbox enqueue: the following arguments are required: recipient")
        return
    given = [flag for dest, flag in _REPLACED.items() if getattr(args, dest) not in (None, [])]
    if given:
        raise UsageError(
            f"outbox enqueue: --json replaces {', '.join(given)}: give one or the other"
        )


def documents(text: str) -> list[Any]:
    """The messages of a --json input: an object, a list, or one JSON value per line."""
    try:
        whole = json.loads(text)
    except ValueError:
        pass
    else:
        return whole if isinstance(whole, list) else [whole]
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InvalidMessage(
                f"--json line {number}",
                f"is not JSON ({exc.msg}, column {exc.colno})",
                rule="json",
            ) from None
    return found


def _time(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    rule = "must be an ISO 8601 time string, e.g. 2026-12-01T09:30:00Z"
    if not isinstance(value, str):
        raise InvalidMessage(field, rule, rule="type")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidMessage(field, rule, rule="type") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _template(value: object) -> Template | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidMessage("template", "must be an object {name, language, ...}", rule="type")
    unknown = sorted(set(value) - set(TEMPLATE_FIELDS))
    if unknown:
        raise InvalidMessage(
            f"template.{unknown[0]}",
            f"unknown field: use {', '.join(TEMPLATE_FIELDS)}",
            rule="unknown_key",
        )
    for required in ("name", "language"):
        if required not in value:
            raise InvalidMessage(f"template.{required}", "is required", rule="required")
    params = value.get("body_params", ())
    return Template(
        value["name"],
        value["language"],
        body_params=tuple(params) if isinstance(params, list) else params,
        header_image=value.get("header_image"),
        components=value.get("components"),
    )


def arguments(document: object) -> dict[str, Any]:
    """enqueue()'s keyword arguments from one JSON object; InvalidMessage naming the field."""
    if not isinstance(document, dict):
        raise InvalidMessage("message", "must be a JSON object with a recipient", rule="type")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise InvalidMessage(
            unknown[0], f"unknown field: use {', '.join(FIELDS)}", rule="unknown_key"
        )
    if "recipient" not in document:
        raise InvalidMessage("recipient", "is required", rule="required")
    return {
        **document,
        "template": _template(document.get("template")),
        "send_at": _time(document.get("send_at"), "send_at"),
        "expires_at": _time(document.get("expires_at"), "expires_at"),
    }


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.json == "-" else args.json
    found = documents(text)
    if not found:
        raise InvalidMessage("--json", "no message given", rule="empty")
    several = len(found) > 1
    ids = []
    for number, document in enumerate(found, 1):
        try:
            ids.append(await enqueue(conn, **arguments(document)))
        except InvalidMessage as exc:
            if not several:
                raise
            raise InvalidMessage(f"message {number}: {exc.field}", exc.text, exc.rule) from None
    await conn.commit()
    for message_id in ids:
        print(message_id)
    return 0
