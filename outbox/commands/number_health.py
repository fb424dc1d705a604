"""`outbox stats`' section on number health: each number's quality and tier, each WABA's
account state, and the daily limit (in effect, and how much of it the last 24 h used).

The configured limit is OUTBOX_DAILY_LIMIT as this command sees it (an `outbox run
--daily-limit` flag is the daemon's own; its /metrics shows the limit it uses).
"""

from __future__ import annotations

import os
from typing import Any

from outbox.connections import AsyncConnectionLike
from outbox.policy import health as policy_health
from outbox.policy.tier import read_limit


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


async def summary(conn: AsyncConnectionLike) -> dict[str, Any]:
    """Number health as JSON-ready data."""
    configured = read_limit(os.environ.get("OUTBOX_DAILY_LIMIT", "").strip() or None)
    health = await policy_health.read(conn, configured)
    limit = None if health.limit is None else str(health.limit)
    return {
        "numbers": [
            {
                "number": n["phone"],
                "waba_id": n["waba_id"],
                "quality": n["quality"],
                "event": n["event"],
                "tier": n["limit_tier"],
                "at": _iso(n["event_at"]),
            }
            for n in health.numbers
        ],
        "accounts": [
            {
                "waba_id": a["waba_id"],
                "restricted": bool(a["restricted"]),
                "restriction": a["restriction"],
                "restricted_until": _iso(a["restricted_until"]),
                "event": a["event"],
                "at": _iso(a["event_at"]),
                "messaging_limit_tier": a["limit_tier"],
            }
            for a in health.accounts
        ],
        "daily_limit": {"limit": limit, "source": health.limit_source, "used": health.used},
        "restricted": health.restricted,
        "warning": health.warning,
    }


def print_lines(data: dict[str, Any]) -> None:
    """The section, one line per fact, aligned like the rest of `outbox stats`."""
    limit = data["daily_limit"]
    if limit["limit"] is None:
        print(f"{'daily limit':<21} none known ({limit['used']} customers counted in 24 h)")
    else:
        print(
            f"{'daily limit':<21} {limit['used']} of {limit['limit']} customers in 24 h "
            f"({limit['source']})"
        )
    for number in data["numbers"]:
        facts = [f"quality {number['quality'] or 'unknown'}"]
        if number["tier"]:
            facts.append(f"tier {number['tier']}")
        if number["event"]:
            facts.append(f"last event {number['event']} at {number['at']}")
        print(f"{'number ' + number['number']:<21} {', '.join(facts)}")
    for account in data["accounts"]:
        if account["restricted"]:
            until = f" until {account['restricted_until']}" if account["restricted_until"] else ""
            state = f"RESTRICTED: {account['restriction'] or account['event']}{until}"
        else:
            state = "can send" + (f" (last event {account['event']})" if account["event"] else "")
        print(f"{'account ' + account['waba_id']:<21} {state}")
