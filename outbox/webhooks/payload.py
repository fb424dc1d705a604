"""Meta's webhook envelope: verify its signature, then read statuses and inbound messages.

Only what outbox acts on is extracted; the raw body is stored as received. A body that is not
Meta's envelope raises NotAnEnvelope (the receiver answers 400, never 500).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox.errors import clean

STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}  # failed is apart: see apply.py
KNOWN_STATUSES = (*STATUS_RANK, "failed")
CALLBACK = re.compile(r"^outbox:(\d{1,18}):(\d{1,4})$")


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
    row_id: int | None  # from biz_opaque_callback_data "outbox:<row>:<part>"
    part: int | None
    error_code: int | None
    error_title: str | None


@dataclass(frozen=True)
class Inbound:
    """A customer's message to a business number: it opens the 24-hour window."""

    wamid: str
    phone_number_id: str
    customer: str
    at: datetime
    type: str


@dataclass(frozen=True)
class Envelope:
    statuses: list[Status]
    inbound: list[Inbound]


def parse(body: bytes) -> Envelope:
    """The statuses and inbound messages of a webhook body, in order."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAnEnvelope(f"not JSON: {clean(str(exc), 120)}") from None
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        raise NotAnEnvelope('"object" must be "whatsapp_business_account"')
    entries = data.get("entry")
    if not isinstance(entries, list):
        raise NotAnEnvelope('"entry" must be a list')
    statuses: list[Status] = []
    inbound: list[Inbound] = []
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
    return Envelope(statuses, inbound)


def _statuses(value: dict[str, Any]) -> list[Status]:
    found = []
    for item in _list(value.get("statuses")):
        wamid, status = item.get("id"), item.get("status")
        if not isinstance(wamid, str) or not wamid or status not in KNOWN_STATUSES:
            continue  # e.g. "played" for voice notes, or a malformed entry
        row_id = part = None
        match = CALLBACK.match(str(item.get("biz_opaque_callback_data") or ""))
        if match:
            row_id, part = int(match.group(1)), int(match.group(2))
        errors = _list(item.get("errors"))
        error = errors[0] if errors else {}
        code = error.get("code")
        title = error.get("title") or error.get("message")
        found.append(
            Status(
                wamid=clean(wamid, 512),
                status=str(status),
                at=_timestamp(item.get("timestamp")),
                recipient=_text(item.get("recipient_id")),
                row_id=row_id,
                part=part,
                error_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                error_title=clean(str(title)) if title else None,
            )
        )
    return found


def _inbound(value: dict[str, Any]) -> list[Inbound]:
    metadata = value.get("metadata")
    phone = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    found = []
    for item in _list(value.get("messages")):
        wamid, customer = item.get("id"), item.get("from")
        if not isinstance(wamid, str) or not isinstance(customer, str):
            continue
        found.append(
            Inbound(
                wamid=clean(wamid, 512),
                phone_number_id=clean(str(phone or ""), 64),
                customer=clean(customer, 64),
                at=_timestamp(item.get("timestamp")),
                type=clean(str(item.get("type") or "unknown"), 32),
            )
        )
    return found


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
