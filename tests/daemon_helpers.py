"""Helpers for tests that run the daemon against the simulator and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.callbacks import installation_id, parse_callback
from outbox.delivery.claim import Claim
from outbox.delivery.daemon import Daemon
from outbox.delivery.events import EventLog
from outbox.delivery.limiter import RateLimiter
from outbox.delivery.record import PartRecorder
from outbox.delivery.send import RowSender
from outbox.delivery.senders import Senders
from outbox.pool import Pool
from outbox.simulator import Simulator, Step
from outbox.whatsapp_client import CloudAPI

TOKEN = "test-token"
PHONE = "1234567890"
IMAGE = "https://cdn.example.com/room.jpg"
VIDEO = "https://cdn.example.com/tour.mp4"


def cli_path() -> Path:
    """The `outbox` console script of the interpreter running the tests."""
    return Path(sys.executable).parent / "outbox"


def daemon_env(database_url: str, simulator: Simulator) -> dict[str, str]:
    """The environment of an `outbox run` process against this database and simulator."""
    return {
        **os.environ,
        "OUTBOX_DATABASE_URL": database_url,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": simulator.url,  # type: ignore[attr-defined]
        # Tests link to hosts that do not exist: Meta (the simulator) never fetches them.
        "OUTBOX_MEDIA_MODE": "link",
    }


async def drain(settings: outbox.Settings) -> int:
    return await asyncio.wait_for(Daemon(settings, drain=True).run(), 30)


def script(simulator: Simulator, recipient: str, *steps: object) -> None:
    simulator.scenario[recipient] = deque(Step.parse(step) for step in steps)


async def enqueue(engine: AsyncEngine, recipient: str, text: str | None, **kwargs: Any) -> int:
    async with engine.begin() as conn:
        return await outbox.enqueue(conn, recipient, text, **kwargs)


async def status(engine: AsyncEngine, message_id: int) -> outbox.Delivery:
    async with engine.connect() as conn:
        return await outbox.get_status(conn, message_id)


def sent(
    simulator: Simulator, keep: Callable[[dict[str, Any]], bool] = lambda a: True
) -> list[str]:
    """The rows and parts (outbox:<row>:<part>) of accepted messages, in acceptance order; the
    installation id of their callback data is left out."""
    return [short_callback(a["callback"]) for a in simulator.accepted if keep(a)]


def short_callback(callback: object) -> str:
    """`outbox:<row>:<part>` for our callback data in either form."""
    parsed = parse_callback(callback)
    assert parsed is not None, f"not our callback data: {callback!r}"
    return f"outbox:{parsed.row}:{parsed.part}"


async def row_sender(
    settings: outbox.Settings,
    pool: Pool,
    http: aiohttp.ClientSession,
    recorder: PartRecorder,
    phone: str,
    senders: Senders | None = None,
) -> RowSender:
    """A RowSender as the daemon builds one, sending from `phone` to an API at
    http://127.0.0.1:9 (for aioresponses to answer) and recording through `recorder`."""
    api = CloudAPI(
        http,
        base_url="http://127.0.0.1:9",
        version="v23.0",
        phone_number_id=phone,
        access_token="t",
    )
    return RowSender(
        settings,
        pool,
        api,
        recorder,
        senders or Senders(phone, 60),
        RateLimiter(45, 6),
        lambda: None,
        EventLog(pool),
        installation=await installation_id(pool),
    )


async def claimed_row(conn: asyncpg.Connection, in_doubt: int = 0) -> tuple[int, uuid.UUID]:
    """A one-text row to 923001234567 set `sending` under a new lease token for 30 s, on its
    first attempt (claim_of is its claim); its id and token."""
    token = uuid.uuid4()
    row_id = await conn.fetchval(
        "INSERT INTO outbox_messages (recipient, message, status, attempts, in_doubt, "
        "lease_token, locked_until) VALUES ('923001234567', 'hi', 'sending', 1, $1, $2, "
        "now() + interval '30 seconds') RETURNING id",
        in_doubt,
        token,
    )
    return int(row_id), token


def claim_of(row_id: int, token: uuid.UUID, *, in_doubt: int = 0, probe: bool = False) -> Claim:
    """The claim of a one-text row to 923001234567 that a test set `sending` with `token` and a
    30 s lease, on its first attempt."""
    return Claim(
        id=row_id,
        recipient="923001234567",
        message="hi",
        media=[],
        accepted=0,
        attempts=1,
        in_doubt=in_doubt,
        token=token,
        lease_until=asyncio.get_running_loop().time() + 30,
        probe=probe,
    )


async def rescheduled(engine: AsyncEngine, row: int) -> sa.Row[tuple[object, ...]]:
    """The row once the daemon has ruled on it (waiting, or failed)."""
    async with engine.connect() as conn:
        for _ in range(200):
            found = (
                await conn.execute(
                    sa.text(
                        "SELECT status, attempts, available_at, error_code, last_error,"
                        " extract(epoch FROM available_at - now()) AS wait"
                        " FROM outbox_messages WHERE id = :id"
                    ),
                    {"id": row},
                )
            ).one()
            if found.last_error is not None and found.status != "sending":
                return found
            await conn.rollback()
            await asyncio.sleep(0.05)
    raise AssertionError("the daemon never ruled on the row")


async def run_until_ruled(
    settings: outbox.Settings, engine: AsyncEngine, row: int
) -> sa.Row[tuple[object, ...]]:
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    try:
        return await rescheduled(engine, row)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(running, 10) == 0
