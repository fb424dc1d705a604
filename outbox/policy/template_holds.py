"""Meta's word on a template, applied to the rows that use it (issue 16, point 3): a PAUSED
template holds its unsent rows, with no request, until Meta's pause ends or an APPROVED
(REINSTATED) webhook comes; a DISABLED one (or REJECTED, PENDING_DELETION, DELETED, ARCHIVED)
fails them.

Twice: when the template webhook is applied (the rows waiting show why at once), and by the
daemon before each send, from the catalogue (store.policy.ROW_FACTS), so that a row claimed
after the webhook was stored is never sent. A template the catalogue does not know, or knows in
any other status, is sent as before: Meta decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from outbox.connections import AsyncConnectionLike, Row
from outbox.errors import clean
from outbox.retry import MAY_HAVE_BEEN_ACCEPTED
from outbox.store import template_holds as store

APPROVED = "APPROVED"
PAUSED = "PAUSED"
DISABLED = "DISABLED"
REFUSED = frozenset({DISABLED, "REJECTED", "PENDING_DELETION", "DELETED", "ARCHIVED"})
TEMPLATE_PAUSED = "template_paused"
TEMPLATE_DISABLED = "template_disabled"
# Meta pauses a template whose quality fell for 3 hours the first time, 6 the second, then
# disables it (Meta: template pausing). Its webhook says which in other_info.title.
PAUSE_LENGTHS = {"FIRST_PAUSE": timedelta(hours=3), "SECOND_PAUSE": timedelta(hours=6)}
DEFAULT_PAUSE = timedelta(hours=3)
SYNCED_PAUSE = timedelta(hours=6)  # a pause seen by `outbox templates sync`: its start unknown


@dataclass(frozen=True)
class TemplateRuling:
    """`hold_until` (with `reason`): the row waits until then; else `reason` fails it, or
    `reason_if_sent` when an earlier request for it may have been accepted."""

    reason: str
    hold_until: datetime | None = None
    reason_if_sent: str | None = None


def pause_length(other_info: object) -> timedelta:
    """How long Meta's pause lasts, from the webhook's `other_info` (FIRST_PAUSE, SECOND_PAUSE)."""
    title = other_info.get("title") if isinstance(other_info, Mapping) else None
    return PAUSE_LENGTHS.get(str(title).upper(), DEFAULT_PAUSE)


def paused_reason(name: str, language: str, until: datetime) -> str:
    return clean(
        f"{TEMPLATE_PAUSED}: Meta paused {name} ({language}) until {until:%Y-%m-%d %H:%M} UTC"
    )


def refused_reason(name: str, language: str, status: str, *, may_have_sent: bool = False) -> str:
    """Why a row fails for its refused template; `may_have_sent`: a request for it had no clear
    answer, so "not sent" would not be known to be true."""
    told = f"{TEMPLATE_DISABLED}: Meta says {name} ({language}) is {status}"
    if may_have_sent:
        return clean(f"{told}; not sent again ({MAY_HAVE_BEEN_ACCEPTED})")
    return clean(f"{told}; not sent")


def ruling(
    status: str | None,
    paused_until: datetime | None,
    now: datetime,
    name: str | None,
    language: str | None,
) -> TemplateRuling | None:
    """What the catalogue's status of the row's template means for it now; None: send."""
    if status is None or name is None or language is None:
        return None
    if status == PAUSED and paused_until is not None and paused_until > now:
        return TemplateRuling(paused_reason(name, language, paused_until), paused_until)
    if status in REFUSED:
        return TemplateRuling(
            refused_reason(name, language, status),
            reason_if_sent=refused_reason(name, language, status, may_have_sent=True),
        )
    return None  # approved, a pause that is over (Meta answers 132015 if not), or Meta decides


async def apply_to_rows(conn: AsyncConnectionLike, changed: list[Row]) -> dict[str, int]:
    """The catalogue rows a status webhook changed (name, language, status, paused_until), applied
    to the pending rows using them; how many were held, failed and released."""
    counts = {"held": 0, "failed": 0, "released": 0}
    for row in changed:
        name, language, status = str(row["name"]), str(row["language"]), str(row["status"])
        until = row["paused_until"]
        if status == PAUSED and until is not None:
            reason = paused_reason(name, language, until)
            counts["held"] += await store.hold_rows(conn, name, language, until, reason)
        elif status in REFUSED:
            reason = refused_reason(name, language, status)
            doubtful = refused_reason(name, language, status, may_have_sent=True)
            counts["failed"] += await store.fail_rows(conn, name, language, reason, doubtful)
        elif status == APPROVED:
            counts["released"] += await store.release_rows(conn, name, language)
    return counts
