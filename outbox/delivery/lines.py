"""How log lines name a row and its parts: the id and the masked recipient, never the number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from outbox.delivery.claim import Claim
from outbox.logs import mask_recipient


def named(claim: Claim) -> str:
    """How a log line names a row: its id and its masked recipient, never the number."""
    return f"message {claim.id} to {mask_recipient(claim.recipient)}"


def until(delay: float) -> str:
    """The wall-clock time `delay` seconds from now, for a log line (UTC, to the second)."""
    return (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds")


def part_fields(index: int | None, count: int | None) -> dict[str, int]:
    """A log line's `part` (counted from 1, as `outbox status` shows parts) and `parts`."""
    if index is None:
        return {}
    return {"part": index + 1} if count is None else {"part": index + 1, "parts": count}
