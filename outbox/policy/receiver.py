"""What Meta's webhooks and answers tell about the rules, recorded beside the webhook's other
contents (in the same transaction): a `user_preferences` "stop" or "resume", a keyword such as
STOP in an inbound text, an inbound message through a click-to-WhatsApp entry point (`referral`),
and failed statuses with 131047 (the window is closed) or 131050 (the customer stopped marketing
messages). The daemon's synchronous 131047 and 131050 go through `learn` too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outbox.connections import AsyncConnectionLike
from outbox.policy.bodies import changes, dicts
from outbox.policy.numbers import canonical
from outbox.store import policy as store

REENGAGEMENT = 131047  # more than 24 h since the customer last wrote
MARKETING_STOPPED = 131050  # the customer stopped marketing messages
_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")
_PHONE_ID = re.compile(r"^[0-9]{1,32}$")
_PUNCTUATION = " \t\r\n.!¡?¿,;:\"'()"
MAX_DETAIL = 200

Consent = tuple[str, str, bool, str, str | None, datetime | None]
Closure = tuple[str, str, datetime | None]


def keyword_set(keywords: Iterable[str]) -> frozenset[str]:
    """Keywords as compared: case-folded, without surrounding spaces."""
    return frozenset(word.strip().casefold() for word in keywords if word.strip())


@dataclass
class Learned:
    referrals: list[str] = field(default_factory=list)  # wamids of inbound messages
    closures: list[Closure] = field(default_factory=list)
    consent: list[Consent] = field(default_factory=list)


def learned(bodies: Iterable[bytes], keywords: frozenset[str]) -> Learned:
    """Everything the bodies say about windows and consent, in arrival order; what is malformed
    is skipped (the body itself stays stored)."""
    found = Learned()
    for change in changes(bodies):
        _read(change.field, change.value, keywords, found)
    return found


async def record(
    conn: AsyncConnectionLike, bodies: Iterable[bytes], keywords: frozenset[str]
) -> None:
    """Record what the bodies say (after their inbound messages were stored)."""
    found = learned(bodies, keywords)
    await store.mark_referrals(conn, found.referrals)
    await store.close_windows(conn, found.closures)
    await store.set_consent(conn, found.consent)


async def learn(conn: AsyncConnectionLike, sender: str, recipient: str, code: int) -> None:
    """A send refused with 131047 closes the window; with 131050 it suppresses the customer."""
    if code == REENGAGEMENT:
        await store.close_windows(conn, [(sender, canonical(recipient), None)])
    elif code == MARKETING_STOPPED:
        detail = "Meta answered 131050 to a send"
        await store.set_consent(
            conn, [(sender, canonical(recipient), True, "131050", detail, None)]
        )


def _read(kind: object, value: dict[str, Any], keywords: frozenset[str], found: Learned) -> None:
    metadata = value.get("metadata")
    phone = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    if not isinstance(phone, str) or not _PHONE_ID.match(phone):
        return
    if kind == "user_preferences":
        for item in dicts(value.get("user_preferences")):
            customer, choice = _customer(item.get("wa_id")), item.get("value")
            if customer is None or item.get("category") != "marketing_messages":
                continue
            if choice in ("stop", "resume"):
                detail = _detail(item.get("detail"))
                at = _timestamp(item.get("timestamp"))
                found.consent.append(
                    (phone, customer, choice == "stop", "user_preferences", detail, at)
                )
        return
    if kind != "messages":
        return
    for item in dicts(value.get("messages")):
        if isinstance(item.get("referral"), dict) and isinstance(item.get("id"), str):
            found.referrals.append(item["id"][:512])
        customer = _customer(item.get("from"))
        text = item.get("text")
        body = text.get("body") if isinstance(text, dict) else None
        if customer is not None and isinstance(body, str) and len(body) <= 64:
            word = body.strip(_PUNCTUATION).casefold()
            if word in keywords:
                at = _timestamp(item.get("timestamp"))
                found.consent.append(
                    (phone, customer, True, "keyword", f"the customer wrote {word.upper()}", at)
                )
    for item in dicts(value.get("statuses")):
        customer = _customer(item.get("recipient_id"))
        if customer is None or item.get("status") != "failed":
            continue
        codes = {error.get("code") for error in dicts(item.get("errors"))}
        at = _timestamp(item.get("timestamp"))
        if REENGAGEMENT in codes:
            found.closures.append((phone, customer, at))
        if MARKETING_STOPPED in codes:
            detail = "a failed status with 131050"
            found.consent.append((phone, customer, True, "131050", detail, at))


def _customer(value: object) -> str | None:
    return canonical(value) if isinstance(value, str) and _DIGITS.match(value) else None


def _detail(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return "".join(c for c in value[:MAX_DETAIL] if c.isprintable())


def _timestamp(value: object) -> datetime | None:
    """Meta's unix seconds (a string); None (now) when missing or absurd."""
    try:
        seconds = int(str(value))
    except ValueError:
        return None
    return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 2**33 else None
