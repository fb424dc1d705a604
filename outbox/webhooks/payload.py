"""Meta's webhook envelope: verify its signature, then read statuses, inbound messages and the
errors Meta reports about the number or app.

Every status Meta sends for a message is read, also those that move no row (played, deleted,
warning): they belong in its history. The raw body is stored as received. A body that is not
Meta's envelope raises NotAnEnvelope (the receiver answers 400, never 500).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outbox.callbacks import parse_callback
from outbox.cost.pricing import Pricing, parse_pricing
from outbox.errors import clean

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}  # failed is apart: see apply.py
# Statuses kept in a message's history without moving it: a voice message played, a message the
# customer deleted, a warning (e.g. a catalogue item that is no longer available).
HISTORY_ONLY = ("played", "deleted", "warning")
KNOWN_STATUSES = (*STATUS_RANK, "failed", *HISTORY_ONLY)


class NotAnEnvelope(ValueError):
    """The body is not a WhatsApp Business Account webhook."""


def signature_matches(secret: str, body: bytes, header: str) -> bool:
    """X-Hub-Signature-256 is `sha256=` and the HMAC-SHA256 of the raw body with the app secret,
    compared in constant time."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = header.strip().removeprefix("sha256=").lower()
    return hmac.compare_digest(expected.encode(), given.encode("ascii", "replace"))


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 header Meta sends with `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Status:
    """One entry of `statuses[]`: a message's new state, by wamid and our callback data."""

    wamid: str
    status: str
    at: datetime
    recipient: str | None
    # From biz_opaque_callback_data "outbox:<installation>:<row>:<part>" (installation None for
    # the old form "outbox:<row>:<part>"); whose installation it is, the store decides.
    installation: str | None
    row_id: int | None
    part: int | None
    error_code: int | None
    error_title: str | None
    pricing: Pricing | None = None  # what Meta charges for the part (sent/delivered/read)


@dataclass(frozen=True)
class Inbound:
    """A customer's message to a business number: it opens the 24-hour window."""

    wamid: str
    phone_number_id: str
    customer: str | None  # `from`: null for a user known only by a username
    user_id: str | None  # `from_user_id`: the business-scoped user id
    at: datetime
    type: str
    error_code: int | None  # Meta could not handle it (e.g. 131051, unsupported type)
    error_title: str | None


@dataclass(frozen=True)
class ReportedError:
    """An error Meta reports about the number or the app (`value.errors[]`), not one message."""

    phone_number_id: str | None
    code: int | None
    title: str | None
    detail: str | None


@dataclass(frozen=True)
class Envelope:
    statuses: list[Status]
    inbound: list[Inbound]
    errors: list[ReportedError] = field(default_factory=list)


def parse(body: bytes) -> Envelope:
    """The statuses and inbound messages of a webhook body, in order."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise NotAnEnvelope(f"not JSON outbox can read: {clean(str(exc), 120)}") from None
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        raise NotAnEnvelope('"object" must be "whatsapp_business_account"')
    entries = data.get("entry")
    if not isinstance(entries, list):
        raise NotAnEnvelope('"entry" must be a list')
    statuses: list[Status] = []
    inbound: list[Inbound] = []
    errors: list[ReportedError] = []
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise NotAnEnvelope('every entry needs a "changes" list')
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict) or change.get("field") != "messages":
                continue  # other fields (quality updates, templates) are not ours to apply
            statuses.extend(_statuses(value))
            inbound.extend(_inbound(value))
            errors.extend(_reported_errors(value))
    return Envelope(statuses, inbound, errors)


def _statuses(value: dict[str, Any]) -> list[Status]:
    found = []
    for item in _list(value.get("statuses")):
        wamid, status = item.get("id"), item.get("status")
        if not isinstance(wamid, str) or not wamid or status not in KNOWN_STATUSES:
            continue  # a malformed entry, or a status Meta may add one day (the body keeps it)
        callback = parse_callback(item.get("biz_opaque_callback_data"))
        code, title = _first_error(item)
        found.append(
            Status(
                wamid=clean(wamid, 512),
                status=str(status),
                at=_timestamp(item.get("timestamp")),
                recipient=_text(item.get("recipient_id")),
                installation=callback.installation if callback else None,
                row_id=callback.row if callback else None,
                part=callback.part if callback else None,
                error_code=code,
                error_title=title,
                pricing=parse_pricing(item.get("pricing")),
            )
        )
    return found


def _inbound(value: dict[str, Any]) -> list[Inbound]:
    metadata = value.get("metadata")
    phone = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    found = []
    for item in _list(value.get("messages")):
        wamid = item.get("id")
        customer, user_id = _text(item.get("from")), _text(item.get("from_user_id"))
        if not isinstance(wamid, str) or not wamid or (customer is None and user_id is None):
            continue
        code, title = _first_error(item)
        found.append(
            Inbound(
                wamid=clean(wamid, 512),
                phone_number_id=clean(str(phone or ""), 64),
                customer=customer,
                user_id=user_id,
                at=_timestamp(item.get("timestamp")),
                type=clean(str(item.get("type") or "unknown"), 32),
                error_code=code,
                error_title=title,
            )
        )
    return found


def _reported_errors(value: dict[str, Any]) -> list[ReportedError]:
    metadata = value.get("metadata")
    phone = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    found = []
    for item in _list(value.get("errors")):
        code, title = _error_of(item)
        data = item.get("error_data")
        detail = data.get("details") if isinstance(data, dict) else None
        found.append(
            ReportedError(
                phone_number_id=_text(phone if isinstance(phone, str) else None),
                code=code,
                title=title,
                detail=clean(detail) if isinstance(detail, str) and detail else None,
            )
        )
    return found


def _first_error(item: dict[str, Any]) -> tuple[int | None, str | None]:
    """The code and title of an entry's first `errors[]` item."""
    errors = _list(item.get("errors"))
    return _error_of(errors[0]) if errors else (None, None)


def _error_of(error: dict[str, Any]) -> tuple[int | None, str | None]:
    code = error.get("code")
    title = error.get("title") or error.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        clean(str(title)) if title else None,
    )


def _list(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return clean(value, 64) if isinstance(value, str) and value else None


def _timestamp(value: object) -> datetime:
    """Meta's unix seconds (a string); now when missing or absurd."""
    try:
        seconds = int(str(value))
        if 0 < seconds < 2**33:
            return datetime.fromtimestamp(seconds, UTC)
    except ValueError:
        pass
    return datetime.now(UTC)
