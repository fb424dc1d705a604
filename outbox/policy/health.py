"""Number health: what Meta's webhooks say about the business numbers and their account, kept
so that /metrics, `outbox stats` and /readyz can show it, and so that the daily limit
(outbox.policy.tier) knows the portfolio's messaging limit.

- `phone_number_quality_update` (per display number; entry.id is the WABA): the event
  (FLAGGED: quality dropped to low, RED; UNFLAGGED: no longer low, GREEN; UPGRADE, DOWNGRADE...)
  or an explicit rating, and the tier (`current_limit`; the portfolio's
  `max_daily_conversations_per_business` when given).
- `business_capability_update` (per WABA): the portfolio's `max_daily_conversations_per_business`.
- `account_update` (per WABA): ACCOUNT_RESTRICTION with a messaging restriction, or a disabled
  account (DISABLED_UPDATE with `ban_info.waba_ban_state` DISABLE), stops sending: /readyz
  answers 503; REINSTATE, or a restriction without a messaging one, lifts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outbox.connections import AsyncConnectionLike, Row
from outbox.policy.bodies import changes, dicts
from outbox.policy.tier import DailyLimit, read_limit
from outbox.store import health as store
from outbox.store import tier as tier_store

QUALITY_SCORES = {"GREEN": 2, "YELLOW": 1, "RED": 0}  # outbox_number_quality's values
_QUALITY_WORDS = {
    "GREEN": "GREEN",
    "HIGH": "GREEN",
    "YELLOW": "YELLOW",
    "MEDIUM": "YELLOW",
    "RED": "RED",
    "LOW": "RED",
}
_EVENT_QUALITY = {"FLAGGED": "RED", "UNFLAGGED": "GREEN"}
# Restrictions that stop messages (RESTRICTED_ADD_PHONE_NUMBER_ACTION does not).
MESSAGING_RESTRICTIONS = frozenset(
    {"RESTRICTED_BIZ_INITIATED_MESSAGING", "RESTRICTED_CUSTOMER_INITIATED_MESSAGING"}
)
DISABLED_STATES = frozenset({"DISABLE", "DISABLED"})
MAX_WORD = 128


@dataclass
class Found:
    """The health changes of some webhook bodies, in arrival order."""

    numbers: list[dict[str, Any]] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)


def health_changes(bodies: Iterable[bytes]) -> Found:
    """What the bodies say about number health; what is malformed is skipped."""
    found = Found()
    for change in changes(bodies):
        entry = change.entry
        waba = _word(entry.get("id")) if isinstance(entry.get("id"), str | int) else None
        if waba is not None:
            _read(change.field, change.value, waba, _timestamp(entry.get("time")), found)
    return found


def _read(
    kind: object, value: dict[str, Any], waba: str, at: datetime | None, found: Found
) -> None:
    if kind == "phone_number_quality_update":
        event = _word(value.get("event"))
        phone = _word(value.get("display_phone_number"))
        tier = _word(value.get("current_limit"))
        if phone is not None:
            phone = "".join(c for c in phone if c.isdigit()) or None
        if phone is not None:
            quality = _quality(value) or _EVENT_QUALITY.get(event or "")
            found.numbers.append(
                {"phone": phone, "waba": waba, "quality": quality, "event": event, "tier": tier}
                | {"at": at}
            )
        _limit(value, ("max_daily_conversations_per_business", "current_limit"), waba, at, found)
    elif kind == "business_capability_update":
        names = (
            "max_daily_conversations_per_business",
            "whatsapp_business_manager_messaging_limit",
        )
        _limit(value, names, waba, at, found)
    elif kind == "account_update":
        _account(value, waba, at, found)


def _limit(
    value: dict[str, Any], names: tuple[str, ...], waba: str, at: datetime | None, found: Found
) -> None:
    """The first of `names` that reads as a limit (TIER_NOT_SET and the like do not)."""
    for name in names:
        limit = read_limit(value.get(name))
        if limit is not None:
            tier = str(value[name])[:MAX_WORD]
            found.limits.append({"waba": waba, "limit": limit.customers, "tier": tier, "at": at})
            return


def _account(value: dict[str, Any], waba: str, at: datetime | None, found: Found) -> None:
    event = _word(value.get("event"))
    if event is None:
        return
    change: dict[str, Any] = {
        "waba": waba,
        "event": event,
        "at": at,
        "decides": False,
        "restricted": False,
        "restriction": None,
        "until": None,
    }
    if event == "ACCOUNT_RESTRICTION":
        kinds, until = [], None
        for item in dicts(value.get("restriction_info")):
            kind = _word(item.get("restriction_type"))
            if kind in MESSAGING_RESTRICTIONS:
                kinds.append(kind)
                expires = _iso(item.get("expiration"))
                until = expires if until is None or (expires and expires > until) else until
        change.update(decides=True, restricted=bool(kinds), until=until)
        change["restriction"] = ", ".join(kinds) or None
    elif event in ("DISABLED_UPDATE", "ACCOUNT_DELETED"):
        ban = value.get("ban_info")
        state = _word(ban.get("waba_ban_state")) if isinstance(ban, dict) else None
        if event == "ACCOUNT_DELETED" or state in DISABLED_STATES:
            change.update(decides=True, restricted=True, restriction=f"{event} {state or ''}")
        elif state == "REINSTATE":
            change.update(decides=True, restricted=False)
    change["restriction"] = change["restriction"] and change["restriction"].strip()
    found.accounts.append(change)


async def record(conn: AsyncConnectionLike, bodies: Iterable[bytes]) -> Found:
    """Record the health the bodies tell, in the caller's transaction; what was found."""
    found = health_changes(bodies)
    for number in found.numbers:
        await store.record_number(conn, **number)
    for limit in found.limits:
        await store.record_limit(conn, **limit)
    for account in found.accounts:
        await store.record_account_event(conn, **account)
    return found


@dataclass(frozen=True)
class Health:
    """Number health as the database knows it now, for /metrics, /readyz and `outbox stats`."""

    numbers: list[Row]
    accounts: list[Row]
    used: int  # unique customers the daily limit counted in the last 24 h
    limit: DailyLimit | None  # in effect: the configured one, else the webhooks', else None
    limit_source: str  # configured, webhook or none

    @property
    def restricted(self) -> str | None:
        """Why sending is restricted now (an account_update said so), or None."""
        reasons = [
            f"account restricted: WABA {a['waba_id']}: {a['restriction'] or a['event']}"
            + (f" until {a['restricted_until'].isoformat()}" if a["restricted_until"] else "")
            for a in self.accounts
            if a["restricted"]
        ]
        return "; ".join(reasons) or None

    @property
    def warning(self) -> str | None:
        """A number whose quality is RED (it can still send), or None."""
        red = [n["phone"] for n in self.numbers if n["quality"] == "RED"]
        return f"quality RED for {', '.join(red)}" if red else None


async def read(conn: AsyncConnectionLike, configured: DailyLimit | None) -> Health:
    """Number health now; `configured` is the daemon's --daily-limit (it wins)."""
    numbers = await store.numbers(conn)
    accounts = await store.accounts(conn)
    usage = await tier_store.usage(conn)
    limit, source = configured, "configured"
    if configured is None:
        limit, source = None, "none"
        if usage["webhook_known"]:
            limit, source = DailyLimit(usage["webhook_limit"]), "webhook"
    return Health(numbers, accounts, int(usage["used"]), limit, source)


def _quality(value: dict[str, Any]) -> str | None:
    for name in ("quality_rating", "new_quality_score", "quality_score"):
        raw = value.get(name)
        if isinstance(raw, dict):
            raw = raw.get("score")
        word = _word(raw)
        if word is not None and word.upper() in _QUALITY_WORDS:
            return _QUALITY_WORDS[word.upper()]
    return None


def _word(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return "".join(c for c in value.strip()[:MAX_WORD] if c.isprintable())


def _timestamp(value: object) -> datetime | None:
    """Meta's unix seconds; None (now) when missing or absurd."""
    try:
        seconds = int(str(value))
    except ValueError:
        return None
    return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 2**33 else None


def _iso(value: object) -> datetime | None:
    """An expiration as Meta writes it (2026-04-19T13:59:20+0000), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
