"""`outbox pause|resume [--sender]`: stored in the database, honoured by every running `outbox run`
within a second, kept across a restart, shown by /readyz and `outbox stats`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.simulator import Simulator
from tests.daemon_helpers import IMAGE, daemon_env, enqueue, status

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent
RECIPIENT = "923001234567"
OTHER_SENDER = "5550001111"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Daemons = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def daemons(database_url: str, simulator: Simulator) -> AsyncIterator[Daemons]:
    """Start `outbox run` processes (a long poll interval: only NOTIFY or the pause timer can
    make them notice a pause quickly); all are stopped at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*flags: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "outbox"),
            "run",
            "--poll-interval",
            "30",
            *flags,
            env=daemon_env(database_url, simulator),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.terminate()
    for process in started:
        await asyncio.wait_for(process.wait(), 30)


async def outbox(database_url: str, *argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        *argv,
        env={**os.environ, "OUTBOX_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def sent(engine: AsyncEngine, message_id: int, within: float = 15.0) -> bool:
    """Whether the row is sent within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if (await status(engine, message_id)).status == "sent":
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_pause_stops_every_running_daemon_within_a_second_and_resume_restarts_them(
    database_url: str, engine: AsyncEngine, daemons: Daemons
) -> None:
    await daemons()
    await daemons()
    assert await sent(engine, await enqueue(engine, RECIPIENT, "before"))  # both are running
    assert (await outbox(database_url, "pause", "--reason", "wrong template"))[0] == 0
    await asyncio.sleep(1.0)
    waiting = [await enqueue(engine, RECIPIENT, f"during {n}") for n in range(3)]
    assert not await sent(engine, waiting[0], within=3.0)
    assert {(await status(engine, row)).status for row in waiting} == {"pending"}
    assert (await outbox(database_url, "resume"))[0] == 0
    assert all([await sent(engine, row) for row in waiting])


async def test_a_restarted_daemon_stays_paused(
    database_url: str, engine: AsyncEngine, daemons: Daemons
) -> None:
    assert (await outbox(database_url, "pause"))[0] == 0
    await daemons()
    row = await enqueue(engine, RECIPIENT, "while paused")
    assert not await sent(engine, row, within=3.0)
    await outbox(database_url, "resume")
    assert await sent(engine, row)


async def test_a_pause_of_one_sender_holds_only_its_rows(
    database_url: str, engine: AsyncEngine, daemons: Daemons
) -> None:
    assert (await outbox(database_url, "pause", "--sender", OTHER_SENDER))[0] == 0
    await daemons()
    held = await enqueue(engine, RECIPIENT, "from the paused number", sender=OTHER_SENDER)
    free = await enqueue(engine, "923007654321", "from the default number")
    assert await sent(engine, free)
    assert (await status(engine, held)).status == "pending"


async def test_readyz_says_paused_by_operator(
    database_url: str, engine: AsyncEngine, daemons: Daemons
) -> None:
    port = free_port()
    await daemons("--http-port", str(port))
    assert await sent(engine, await enqueue(engine, RECIPIENT, "ready"))
    await outbox(database_url, "pause", "--reason", "maintenance")
    await asyncio.sleep(1.0)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        assert response.status == 503
        health = await response.json()
    assert health["status"] == "paused"
    assert "paused by operator" in health["reason"]
    assert "maintenance" in health["reason"]


async def test_stats_shows_the_pause_and_the_paused_daemons(
    database_url: str, engine: AsyncEngine, daemons: Daemons
) -> None:
    await daemons()
    assert await sent(engine, await enqueue(engine, RECIPIENT, "running"))
    await outbox(database_url, "pause", "--reason", "maintenance")
    await asyncio.sleep(1.5)  # the daemon reports its state every half second
    code, out = await outbox(database_url, "stats", "--json")
    assert code == 0
    stats = json.loads(out)
    assert [(p["sender"], p["reason"]) for p in stats["pauses"]] == [("*", "maintenance")]
    assert [d["state"] for d in stats["daemons"]] == ["paused"]
    assert "paused by operator" in stats["daemons"][0]["reason"]


async def test_a_row_in_flight_finishes_its_current_part_then_waits_for_resume(
    database_url: str, engine: AsyncEngine, simulator: Simulator, daemons: Daemons
) -> None:
    simulator.latency_ms = 1000  # five parts take five seconds: the pause comes in between
    await daemons()
    row = await enqueue(engine, RECIPIENT, "caption", media_urls={"images": [IMAGE] * 4})
    for _ in range(300):  # until its first part is accepted
        if simulator.accepted:
            break
        await asyncio.sleep(0.05)
    assert (await outbox(database_url, "pause"))[0] == 0
    await asyncio.sleep(3.0)
    accepted = len(simulator.accepted)
    assert accepted < 5
    delivery = await status(engine, row)
    assert delivery.status == "pending"
    assert sum(1 for wamid in delivery.part_ids if wamid) == accepted  # every accepted part kept
    assert delivery.attempts == 0  # a pause uses no attempt
    await asyncio.sleep(1.0)
    assert len(simulator.accepted) == accepted
    await outbox(database_url, "resume")
    assert await sent(engine, row)
    assert len(simulator.accepted) == 5  # each part once
