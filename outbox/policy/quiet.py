"""Quiet hours: no request reaches a customer while it is night where the customer lives
(`outbox run --quiet-hours 21:00-09:00`); a row claimed then waits for the next opening.

The customer's time zones come from the number (libphonenumber's data). A number with several
(+1, +7, +55 mobiles...) is quiet while it is quiet in ANY of them, so nobody is woken; its
opening is the first instant when it is quiet in none. A number of no known zone is never quiet
(as an unknown window, it is sent as before). Openings are local wall-clock times converted to
UTC with zoneinfo, so a daylight-saving change moves them as it moves the customer's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_zones

from outbox.errors import ConfigurationError, InvalidMessage

RULE = "HH:MM-HH:MM on a 24-hour clock, start and end different, e.g. 21:00-09:00"
_WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")
# Several zones can chain openings into one another; past this many steps the quiet hours of a
# number's zones cover the whole day, and the row goes rather than wait forever.
MAX_STEPS = 64
# An IANA zone name, as the table's CHECK takes it (zoneinfo then says whether it exists).
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+/-]{0,63}$")


@dataclass(frozen=True)
class QuietHours:
    """A daily local-time window with no sends: from `start` (included) to `end` (excluded),
    wrapping midnight when `start` is later than `end`."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def quiet_at(self, local: time) -> bool:
        """Whether a local time of day falls in the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def opening(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """The next end of the window in `zone` (in UTC), or None when it is not quiet there
        now. The local wall-clock end is converted, so a DST change in between counts."""
        local = now.astimezone(zone)
        if not self.quiet_at(local.time()):
            return None
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)  # quiet since this evening: it opens tomorrow morning
        opens = datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC)
        # A local end that does not exist (skipped by a spring-forward change) can map back
        # before now; the clock then already passed it.
        return opens if opens > now else now + timedelta(minutes=1)


def parse_quiet_hours(text: str, name: str = "quiet-hours") -> QuietHours:
    """`21:00-09:00` as QuietHours; a ConfigurationError naming `name` and the rule otherwise."""
    match = _WINDOW.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(f"{name}: {text!r} must be {RULE}")
    start = time(int(match[1]), int(match[2]))
    end = time(int(match[3]), int(match[4]))
    if start == end:
        raise ConfigurationError(f"{name}: {text!r} must be {RULE}")
    return QuietHours(start, end)


@lru_cache(maxsize=4096)
def zones_for(recipient: str) -> tuple[ZoneInfo, ...]:
    """The time zones libphonenumber places a number (digits with country code) in; none when
    unknown."""
    try:
        number = phonenumbers.parse("+" + recipient.lstrip("+"))
    except phonenumbers.NumberParseException:
        return ()
    names = phone_zones.time_zones_for_number(number)
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (KeyError, ValueError):  # Etc/Unknown, or a name this system's tzdata lacks
            continue
    return tuple(zones)


def next_opening(hours: QuietHours, zones: tuple[ZoneInfo, ...], now: datetime) -> datetime | None:
    """When a customer in `zones` may next be sent to (UTC), or None when it may be now: the
    first instant from `now` quiet in none of the zones. None too when there is no such instant
    (the zones' quiet hours cover the whole day), so that the row is not held forever."""
    at = now
    for _ in range(MAX_STEPS):
        later = [opens for zone in zones if (opens := hours.opening(at, zone)) is not None]
        if not later:
            return None if at == now else at
        at = max(later)
    return None


NO_QUIET_HOURS = "none"  # a row's own quiet hours that lets it go at any hour


def row_quiet_hours(own: str | None, default: QuietHours | None) -> QuietHours | None:
    """A row's quiet hours: its own (`none`: none at all), else the daemon's. An InvalidMessage
    for a value only a plain SQL insert can store (start equal to end)."""
    if own is None:
        return default
    if own == NO_QUIET_HOURS:
        return None
    try:
        return parse_quiet_hours(own)
    except ConfigurationError as exc:
        raise InvalidMessage("quiet_hours", f"{own!r} must be {RULE}, or none") from exc


def row_zone(name: str | None) -> ZoneInfo | None:
    """A row's own time zone (an IANA name); None: the number's. An InvalidMessage when this
    system's tz database does not know it."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidMessage(
            "timezone",
            f"{name[:80]!r} is not a time zone (an IANA name, e.g. Europe/Madrid)",
            rule="timezone",
        ) from None


def checked_row_quiet(quiet_hours: object, timezone: object) -> dict[str, Any]:
    """enqueue()'s `quiet_hours` and `timezone`, checked: InvalidMessage naming the field."""
    if quiet_hours is not None:
        if not isinstance(quiet_hours, str):
            raise InvalidMessage("quiet_hours", f"must be a string: {RULE}, or none", rule="type")
        quiet_hours = quiet_hours.strip()
        if quiet_hours.lower() == NO_QUIET_HOURS:
            quiet_hours = NO_QUIET_HOURS
        else:
            try:
                parse_quiet_hours(quiet_hours)
            except ConfigurationError:
                raise InvalidMessage(
                    "quiet_hours", f"{quiet_hours!r} must be {RULE}, or none", rule="quiet_hours"
                ) from None
    if timezone is not None:
        if not isinstance(timezone, str):
            raise InvalidMessage("timezone", "must be a string, e.g. Europe/Madrid", rule="type")
        timezone = timezone.strip()
        if not _ZONE_NAME.match(timezone):
            raise InvalidMessage(
                "timezone",
                f"{timezone[:80]!r} is not a time zone (an IANA name, e.g. Europe/Madrid)",
                rule="timezone",
            )
        row_zone(timezone)  # one this system's tz database knows
    return {"quiet_hours": quiet_hours, "timezone": timezone}


def quiet_until(
    hours: QuietHours | None, recipient: str, now: datetime, zone: ZoneInfo | None = None
) -> tuple[datetime, str] | None:
    """(the opening in UTC, its wording `09:00 America/Sao_Paulo`) when `recipient` is inside
    quiet hours at `now`; None when the row may go. `zone` replaces the number's zones."""
    if hours is None:
        return None
    zones = (zone,) if zone is not None else zones_for(recipient)
    opens = next_opening(hours, zones, now)
    if opens is None:
        return None
    # Named in a zone whose window ends then: the one the row waits for.
    before = opens - timedelta(seconds=1)
    zone = next((z for z in zones if hours.quiet_at(before.astimezone(z).time())), zones[0])
    local = opens.astimezone(zone)
    return opens, f"{local:%Y-%m-%d %H:%M} {zone.key}"
