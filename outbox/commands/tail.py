"""`outbox tail`: follow the delivery history live (every request's outcome and every status
webhook, from outbox_events), by recipient and status, until Ctrl-C or SIGTERM (exit 0).

Recipients are masked as in the logs (`+********4567`) unless --show-numbers: a terminal
following production is often on a shared screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

from outbox.commands import values
from outbox.connections import Row
from outbox.logs import mask_recipient
from outbox.store import tail

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


POLL_SECONDS = 0.5
GAP_SECONDS = 10.0  # longer than any transaction appending events takes to commit
BATCH = 1000


def add_command(commands: Any) -> None:
    p = commands.add_parser(
        "tail",
        help="follow the delivery history live (requests and status webhooks)",
        description="Print each new entry of the delivery history (outbox_events: every "
        "request's outcome, every status webhook) as it is written, until Ctrl-C or SIGTERM. "
        "Recipients are masked as in the logs unless --show-numbers.",
    )
    p.add_argument("--recipient", metavar="R", help="only messages to this number")
    p.add_argument(
        "--status",
        type=values.status_list,
        action="append",
        metavar="S",
        help="only messages now in these statuses: failed,pending (or repeat the option)",
    )
    p.add_argument(
        "--since",
        type=values.since,
        metavar="WHEN",
        help="first print the entries since then (30m, 2h, 7d back, or ISO 8601); default: "
        "only new ones",
    )
    p.add_argument(
        "--show-numbers", action="store_true", help="print recipients in full, not masked"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per line")


def check_usage(args: argparse.Namespace) -> None:
    values.recipient_filter("outbox tail", args.recipient)


def _line(row: Row, show_numbers: bool) -> str:
    recipient = row["recipient"] if show_numbers else mask_recipient(row["recipient"])
    part = "-" if row["part"] is None else str(row["part"] + 1)
    figures = " ".join(
        text
        for text in (
            f"HTTP {row['http_status']}" if row["http_status"] else "",
            f"#{row['error_code']}" if row["error_code"] is not None else "",
            f"{row['latency_ms']:.0f} ms" if row["latency_ms"] is not None else "",
        )
        if text
    )
    detail = " ".join((row["detail"] or "").split())[:100]
    return (
        f"{row['at'].isoformat(timespec='milliseconds')}  #{row['message_id']:<8} "
        f"{recipient:<15} part {part:<3}{row['kind']:<18}{figures:<24}{detail}"
    ).rstrip()


def _document(row: Row, show_numbers: bool) -> str:
    return json.dumps(
        {
            "id": row["id"],
            "at": row["at"].isoformat(),
            "message_id": row["message_id"],
            "recipient": row["recipient"] if show_numbers else mask_recipient(row["recipient"]),
            "status": row["status"],
            "part": row["part"],
            "kind": row["kind"],
            "http_status": row["http_status"],
            "error_code": row["error_code"],
            "detail": row["detail"],
            "latency_ms": row["latency_ms"],
        },
        ensure_ascii=False,
    )


class Follower:
    """The ids read so far: the highest, and the gaps below it still worth asking for."""

    def __init__(self, start: int) -> None:
        self.last = start
        self.gaps: dict[int, float] = {}  # id -> loop time to give up on it

    def seen(self, ids: list[int], now: float) -> None:
        for event_id in ids:
            self.gaps.pop(event_id, None)
        for event_id in sorted(ids):
            if event_id > self.last:
                for missing in range(self.last + 1, min(event_id, self.last + BATCH + 1)):
                    self.gaps[missing] = now + GAP_SECONDS
                self.last = event_id
        for event_id, until in list(self.gaps.items()):
            if until <= now:
                del self.gaps[event_id]


async def run(conn: AsyncConnection, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        recipient = values.recipient_filter("outbox tail", args.recipient)
        statuses = values.statuses(args.status)
        follower = Follower(await tail.start_id(conn, args.since))
        await conn.commit()
        print("following the delivery history; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.is_set():
            rows = await tail.events_after(
                conn,
                after=follower.last,
                gaps=sorted(follower.gaps),
                recipient=recipient,
                statuses=statuses,
                limit=BATCH,
            )
            await conn.commit()  # a fresh snapshot for the next read
            follower.seen([int(row["id"]) for row in rows], loop.time())
            for row in rows:
                if row["matches"]:
                    print(
                        _document(row, args.show_numbers)
                        if args.json
                        else _line(row, args.show_numbers),
                        flush=True,
                    )
            if len(rows) < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
