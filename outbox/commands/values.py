"""Converters for the operator commands' options: each bad value is a usage error (exit 2) that
names the rule; argparse adds the option's name."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from outbox.arguments import UsageError, parse_duration, parse_time
from outbox.errors import InvalidMessage
from outbox.schema import STATUSES
from outbox.validation import recipient_digits


def status_list(text: str) -> list[str]:
    """`failed` or `failed,pending`: every name one of the statuses."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STATUSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid status {', '.join(unknown) or repr(text)}: use one or more of "
            f"{', '.join(STATUSES)}, separated by commas"
        )
    return names


def since(text: str) -> datetime | timedelta:
    """A time: a duration back from the database's now (`30m`, `2h`, `7d`, a timedelta) or an
    ISO 8601 time (UTC when it has no offset)."""
    stripped = text.strip()
    if stripped[:1].isdigit() and stripped[-1:] in ("m", "h", "d") and stripped[:-1].isdigit():
        return parse_duration(stripped)
    try:
        return parse_time(stripped)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use a duration back from now (30m, 2h, 7d) or ISO 8601 "
            "(2026-12-01T09:30:00+05:00)"
        ) from None


def error_code(text: str) -> int:
    """A Graph error code, e.g. 131026."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(
            f"invalid code {text!r}: must be a Graph error code, a whole number such as 131026"
        )
    return value


def statuses(values: list[list[str]] | None) -> list[str]:
    """The statuses of a repeated `--status` option, in order, without repeats."""
    return list(dict.fromkeys(name for group in values or [] for name in group))


def age(duration: timedelta) -> str:
    """A duration as the options write it: 7d, 24h or 30m."""
    minutes = int(duration.total_seconds() // 60)
    if minutes % 1440 == 0 and minutes > 1440:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def recipient_filter(command: str, recipient: str | None) -> str | None:
    """`--recipient` as stored (digits); a malformed one is bad usage naming the rule."""
    if recipient is None:
        return None
    try:
        return recipient_digits(recipient, "--recipient")
    except InvalidMessage as exc:
        raise UsageError(f"{command}: --recipient: {exc.text}") from None
