"""GET /operate: what the outbox is doing. The work in hand by sender and what holds it (live,
capped counts), the daemons, pauses and outages with their reasons, and the last 24 hours as
charts from the rollup (sends and failures per 10 minutes, failures by Graph code and by
template, per sender). No query here reads more than a bounded number of rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from outbox.connections import Row
from outbox.dashboard import charts
from outbox.dashboard.auth import session_of
from outbox.dashboard.pages.search import ENGINE
from outbox.dashboard.render import page
from outbox.explain import explain
from outbox.store import dashboard as lookups
from outbox.store import operations, rollup

PERIOD = timedelta(hours=24)
BUCKET_SECONDS = 600
CAP = 10_000  # live counts stop here ("10,000+")
TOP = 10  # failure codes and templates shown
SENDERS = 50
ACTIONS = 20  # latest audit entries shown
DONE = {"retry": "Retried", "cancel": "Cancelled"}


def _buckets(rows: Sequence[Row], since: datetime, until: datetime) -> list[charts.Bucket]:
    """Every bucket of the period, the empty ones too."""
    found = {row["bucket"]: row for row in rows}
    start = datetime.fromtimestamp(
        since.timestamp() // BUCKET_SECONDS * BUCKET_SECONDS, tz=since.tzinfo
    )
    buckets = []
    while start <= until:
        row = found.get(start)
        buckets.append(
            charts.Bucket(
                start,
                int(row["sent"] or 0) if row else 0,
                int(row["failed"] or 0) if row else 0,
            )
        )
        start += timedelta(seconds=BUCKET_SECONDS)
    return buckets


def _code_label(code: int) -> str:
    if code == 0:
        return "no Graph code (outbox's own rule)"
    explanation = explain(code)
    return f"#{code} {explanation.meaning}" if explanation else f"#{code}"


def _counted(count: int) -> str:
    return f"{CAP:,}+" if count >= CAP else f"{count:,}"


async def figures(request: web.Request) -> dict[str, Any]:
    """Everything the page shows, read in one connection."""
    async with request.app[ENGINE].connect() as conn:
        now = await operations.now(conn)
        since = now - PERIOD
        per_bucket = await rollup.per_bucket(conn, since, BUCKET_SECONDS)
        codes = await rollup.failures_by_code(conn, since, TOP)
        templates = await rollup.failures_by_template(conn, since, TOP)
        senders = await rollup.by_sender(conn, since, SENDERS)
        mark = await rollup.mark(conn)
        in_hand = await operations.in_hand(conn, CAP)
        held = await operations.held(conn, CAP, TOP)
        oldest = await operations.oldest_pending(conn)
        daemons = await operations.live_daemons(conn)
        pauses = await operations.pauses(conn)
        actions = await lookups.recent_actions(conn, ACTIONS)
    table: dict[str, dict[str, Any]] = {}
    for row in senders:
        entry = table.setdefault(row["sender"], {"pending": 0, "sending": 0})
        entry.update(sent=int(row["sent"] or 0), failed=int(row["failed"] or 0))
    for row in in_hand:
        entry = table.setdefault(row["sender"], {"pending": 0, "sending": 0})
        entry[row["status"]] = int(row["count"])
    in_hand_total = sum(int(row["count"]) for row in in_hand)
    return {
        "now": now,
        "sends_chart": charts.timeline(
            _buckets(per_bucket, since, now), title="Sends and failures per 10 minutes"
        ),
        "codes_chart": charts.ranking(
            [(_code_label(int(r["key"])), int(r["count"])) for r in codes],
            title="Failures by Graph code",
        ),
        "templates_chart": charts.ranking(
            [(str(r["key"]), int(r["count"])) for r in templates], title="Failures by template"
        ),
        "senders": [
            {
                "sender": sender or "default (META_PHONE_NUMBER_ID)",
                "pending": _counted(entry["pending"]),
                "sending": _counted(entry["sending"]),
                "sent": entry.get("sent", 0),
                "failed": entry.get("failed", 0),
            }
            for sender, entry in sorted(table.items())
        ],
        "in_hand": _counted(in_hand_total),
        "held": [{"reason": r["reason"], "count": _counted(int(r["count"]))} for r in held],
        "oldest": oldest,
        "daemons": daemons,
        "pauses": pauses,
        "folded_at": None if mark is None else mark["folded_at"],
        "actions": actions,
    }


def notice(text: str) -> str | None:
    """`retry:12` from a bulk action's redirect, in words (never the query's own text)."""
    action, _, count = text.partition(":")
    if action not in DONE or not (count.isascii() and count.isdigit()):
        return None
    return f"{DONE[action]} {int(count)} message(s)."


async def show(request: web.Request) -> web.Response:
    session = session_of(request)
    return page(
        request,
        "operate.html",
        session=session,
        may_bulk=session.user.role.may_bulk,
        notice=notice(request.query.get("notice", "")),
        **await figures(request),
    )
