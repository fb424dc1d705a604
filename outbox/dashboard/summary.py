"""A message's state in one plain sentence, and its timeline as a person reads it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox.dashboard.masking import show_phone
from outbox.explain import Explanation, explain
from outbox.schema import CANCELLED, DELIVERED, FAILED, PENDING, READ, SENDING, SENT
from outbox.status import Delivery, Event


def clock(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M UTC")


def _hm(at: datetime | None) -> str:
    return "?" if at is None else at.strftime("%H:%M")


def sentence(delivery: Delivery, *, unmasked: bool) -> str:
    """'Delivered to +92 ***4567 at 14:02, read at 14:05', and so on for every status."""
    phone = show_phone(delivery.recipient, unmasked=unmasked)
    status = delivery.status
    if status == READ:
        return (
            f"Delivered to {phone} at {_hm(delivery.delivered_at)}, read at {_hm(delivery.read_at)}"
        )
    if status == DELIVERED:
        return f"Delivered to {phone} at {_hm(delivery.delivered_at)}, not read yet"
    if status == SENT:
        return f"Accepted by WhatsApp for {phone} at {_hm(delivery.sent_at)}, not delivered yet"
    if status == SENDING:
        return f"Being sent to {phone} now"
    if status == PENDING:
        when = delivery.next_attempt_at
        retry = f" (attempt {delivery.attempts + 1})" if delivery.attempts else ""
        return f"Waiting to be sent to {phone}, next try at {_hm(when)}{retry}"
    if status == FAILED:
        return f"Not sent to {phone}: it failed after {delivery.attempts} attempt(s)"
    if status == CANCELLED:
        return f"Cancelled: never sent to {phone}"
    return f"{status} ({phone})"


def explanation(delivery: Delivery) -> Explanation | None:
    """The plain words for its error, when it had one outbox knows."""
    return explain(delivery.error_code)


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    at: str
    what: str
    part: int | None  # numbered from 1
    detail: str | None
    explanation: Explanation | None


# A request's outcome as outbox.delivery.events records it, in words.
_KINDS = {
    "accepted": "attempt: accepted by Meta",
    "reconciled": "accepted by Meta (found by its status webhook)",
    "transient": "attempt failed, retried later",
    "throttle": "attempt throttled, waited",
    "permanent": "attempt refused by Meta",
    "account": "attempt refused: account problem, sending paused",
    "in_doubt": "attempt with no clear answer (may have gone)",
    "expired": "expired before it could be sent",
    "unfailed": "failure undone: it was the first sign of an API outage; pending again",
}


def timeline(
    delivery: Delivery, history: list[Event], actions: Sequence[Mapping[str, Any]] = ()
) -> list[Step]:
    """Enqueued first, then every request's outcome, webhook status and dashboard action
    (`outbox_audit`), oldest first."""
    steps = [(delivery.created_at, Step(clock(delivery.created_at), "enqueued", None, None, None))]
    for action in actions:
        what = f"{action['action']} by {action['actor']} (dashboard)"
        steps.append((action["at"], Step(clock(action["at"]), what, None, action["detail"], None)))
    for event in history:
        if event.kind.startswith("status:"):
            what = "webhook: " + event.kind.removeprefix("status:")
        else:
            what = _KINDS.get(event.kind, event.kind.replace("_", " "))
        if event.http_status:
            what += f" (HTTP {event.http_status})"
        detail = event.detail
        if event.error_code is not None:
            detail = f"#{event.error_code} {detail or ''}".strip()
        part = None if event.part is None else event.part + 1
        steps.append(
            (event.at, Step(clock(event.at), what, part, detail, explain(event.error_code)))
        )
    # Stable: the history's own order holds among entries of the same instant.
    return [step for _, step in sorted(steps, key=lambda entry: entry[0])]
