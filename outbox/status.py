"""Delivery: what happened to a message, read from its row; get_status() and list_messages()."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox import store
from outbox.connections import AsyncConnectionLike, Row
from outbox.errors import InvalidMessage, MessageNotFound
from outbox.schema import PENDING, STATUSES
from outbox.validation import recipient_digits

MAX_LIST_LIMIT = 10_000


def _json(text: str) -> Any:
    """A JSON column's value; None for one Python cannot read (a raw-SQL row with a number of
    5,000 digits, say), so one odd row never breaks listing the others."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class Part:
    """One part of a message as sent: a media item or the text (always last)."""

    type: str
    wamid: str | None
    status: str | None
    url: str | None = None


@dataclass(frozen=True)
class Delivery:
    """A message's delivery state. `part_ids` has one wamid or None per part, text last."""

    id: int
    recipient: str
    status: str
    attempts: int
    message: str | None
    media: tuple[dict[str, str], ...]
    message_id: str | None
    part_ids: tuple[str | None, ...]
    parts: tuple[Part, ...]
    last_error: str | None
    error_code: int | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    next_attempt_at: datetime | None
    expires_at: datetime | None = None
    in_doubt: int = 0  # sends whose outcome was unknown (a timeout, a 200 without an id)
    template: dict[str, Any] | None = None  # Meta's template object, for a template message
    sender: str | None = None  # the phone number id it goes from (None: META_PHONE_NUMBER_ID)
    fallback: dict[str, Any] | None = None  # the template sent instead if the window is closed
    sent_fallback: bool = False  # it went (or goes) as its fallback: its window was closed
    category: str | None = None  # Meta's category of its template or fallback (None: unknown)
    reference: str | None = None  # the app's own name for the row (`enqueue(reference=)`)

    @classmethod
    def from_row(cls, row: Row) -> Delivery:
        media = _json(row["media"])
        media = media if isinstance(media, list) else []
        accepted = _json(row["parts"])
        accepted = accepted if isinstance(accepted, list) else []
        planned: list[tuple[str, str | None]] = [
            (str(item.get("type")), item.get("url")) if isinstance(item, dict) else ("?", None)
            for item in media
        ]
        if row["message"]:
            planned.append(("text", None))
        template = _json(row["template"]) if row["template"] else None
        template = template if isinstance(template, dict) else None
        fallback = _json(row["fallback"]) if row.get("fallback") else None
        fallback = fallback if isinstance(fallback, dict) else None
        if template is not None or (row.get("sent_fallback") and fallback is not None):
            planned = [("template", None)]
        parts = []
        for index, (kind, url) in enumerate(planned):
            sent = accepted[index] if index < len(accepted) else {}
            sent = sent if isinstance(sent, dict) else {}
            parts.append(Part(kind, sent.get("wamid"), sent.get("status"), url))
        return cls(
            id=row["id"],
            recipient=row["recipient"],
            status=row["status"],
            attempts=row["attempts"],
            message=row["message"],
            media=tuple(media),
            message_id=row["message_id"],
            part_ids=tuple(part.wamid for part in parts),
            parts=tuple(parts),
            last_error=row["last_error"],
            error_code=row["error_code"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            sent_at=row["sent_at"],
            delivered_at=row["delivered_at"],
            read_at=row["read_at"],
            next_attempt_at=row["available_at"] if row["status"] == PENDING else None,
            expires_at=row["expires_at"],
            in_doubt=row["in_doubt"],
            template=template,
            sender=row["sender"],
            fallback=fallback,
            sent_fallback=bool(row.get("sent_fallback")),
            category=row.get("category"),
            reference=row.get("reference"),
        )

    def to_json(self) -> dict[str, Any]:
        """Public column names as keys, timestamps ISO 8601 with offset."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "id": self.id,
            "recipient": self.recipient,
            "status": self.status,
            "attempts": self.attempts,
            "message": self.message,
            "media": list(self.media),
            "message_id": self.message_id,
            "part_ids": list(self.part_ids),
            "parts": [  # numbered from 1, as `outbox status` prints them
                {"part": number, "type": p.type, "url": p.url, "wamid": p.wamid, "status": p.status}
                for number, p in enumerate(self.parts, 1)
            ],
            "last_error": self.last_error,
            "error_code": self.error_code,
            "idempotency_key": self.idempotency_key,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "sent_at": iso(self.sent_at),
            "delivered_at": iso(self.delivered_at),
            "read_at": iso(self.read_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "expires_at": iso(self.expires_at),
            "in_doubt": self.in_doubt,
            "template": self.template,
            "sender": self.sender,
            "fallback": self.fallback,
            "sent_fallback": self.sent_fallback,
            "category": self.category,
            "reference": self.reference,
        }


async def get_status(conn: AsyncConnectionLike, message_id: int) -> Delivery:
    """The delivery state of one message; MessageNotFound for an unknown id."""
    row = await store.select_message(conn, message_id)
    if row is None:
        raise MessageNotFound(message_id)
    return Delivery.from_row(row)


@dataclass(frozen=True)
class Event:
    """One entry of a message's history: a request's outcome or a status webhook."""

    at: datetime
    part: int | None
    kind: str
    http_status: int | None
    error_code: int | None
    detail: str | None
    latency_ms: float | None

    def to_json(self) -> dict[str, Any]:
        """`part` numbered from 1, as in the text of `outbox status` (`self.part` is the index)."""
        return {
            "at": self.at.isoformat(),
            "part": None if self.part is None else self.part + 1,
            "kind": self.kind,
            "http_status": self.http_status,
            "error_code": self.error_code,
            "detail": self.detail,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
        }


async def get_history(conn: AsyncConnectionLike, message_id: int) -> list[Event]:
    """A message's history, oldest first: every request's outcome and every status webhook.
    A part accepted by a daemon killed before it wrote its history is there too, from the
    wamid it recorded (without HTTP figures: those died with the daemon)."""
    history = [Event(**row) for row in await store.select_events(conn, message_id)]
    for row in await store.select_unlogged_accepts(conn, message_id):
        accepted = Event(**row)
        # Where its time puts it, and before the part's statuses (Meta's whole seconds).
        place = next(
            (
                i
                for i, event in enumerate(history)
                if event.at > accepted.at
                or (event.part == accepted.part and event.kind.startswith("status:"))
            ),
            len(history),
        )
        history.insert(place, accepted)
    return history


async def list_messages(
    conn: AsyncConnectionLike,
    *,
    status: str | None = None,
    recipient: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Messages newest first, optionally by status, recipient and creation time."""
    if status is not None and status not in STATUSES:
        raise InvalidMessage("status", f"must be one of {', '.join(STATUSES)}", rule="choice")
    if recipient is not None:
        # Only the written form: rows stored before the phone number rules must stay findable.
        recipient = recipient_digits(recipient)
    if since is not None and since.tzinfo is None:
        raise InvalidMessage(
            "since", "must be timezone-aware (a naive time is ambiguous)", rule="naive_time"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidMessage(
            "limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}", rule="out_of_range"
        )
    rows = await store.select_messages(
        conn, status=status, recipient=recipient, since=since, limit=limit
    )
    return [Delivery.from_row(row) for row in rows]
