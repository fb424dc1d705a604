"""A claimed row as it goes out: its parts, read again from its columns (a plain SQL insert never
went through enqueue's checks), and what its expiry may truthfully say of it."""

from __future__ import annotations

import json
from typing import Any

from outbox.delivery.claim import Claim
from outbox.errors import InvalidMessage, clean
from outbox.retry import MAY_HAVE_BEEN_ACCEPTED
from outbox.validation import normalize_media, normalize_recipient, normalize_text
from outbox.whatsapp import Part, parts_of


def row_parts(claim: Claim) -> tuple[str, list[Part], Any]:
    """The row's recipient, its parts in order and its template (None for free-form); raises
    InvalidMessage for a row that cannot be sent."""
    # enqueue() checked it with libphonenumber already (migration 0022), else now.
    recipient = claim.recipient if claim.recipient_checked else normalize_recipient(claim.recipient)
    media = normalize_media(_loaded(claim.media, "media"))
    template = _loaded(claim.template, "template")
    parts = parts_of(normalize_text(claim.message), media, template)
    if not parts:
        raise InvalidMessage(
            "message", "a message needs text, at least one media part, or a template", rule="empty"
        )
    return recipient, parts, template


def expired(claim: Claim) -> str:
    """Why a row fails at its deadline: never "not sent" of a row whose earlier request may have
    been accepted (in doubt, or taken over from a daemon that lost it)."""
    if claim.doubtful_part is not None:
        return f"expired: not sent again before its deadline ({MAY_HAVE_BEEN_ACCEPTED})"
    return "expired: not sent before its deadline"


def _loaded(value: Any, field: str) -> Any:
    """A JSON column as claimed (text), parsed; what Python cannot read is the row's fault."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(
            field, f"is JSON outbox cannot read ({clean(str(exc), 100)})", rule="json"
        ) from None
