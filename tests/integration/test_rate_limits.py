"""`--rate` holds across daemons: several `outbox run` processes on one database share one token
bucket per sender in PostgreSQL, and a 130429 slows every one of them down."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import outbox
from outbox.delivery.rate import SharedRate
from outbox.pool import Pool
from outbox.simulator import Simulator
from tests.daemon_helpers import PHONE, daemon_env, drain, enqueue, script

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent


def busiest_second(arrivals: list[float]) -> int:
    """The most requests in any one-second window (sliding, starting at each request)."""
    times = sorted(arrivals)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def drain_with(database_url: str, simulator: Simulator, daemons: int, *flags: str) -> None:
    """Run `daemons` `outbox run --drain` processes at once until every one has exited."""
    env = daemon_env(database_url, simulator)
    processes = [
        await asyncio.create_subprocess_exec(
            str(BIN / "outbox"),
            "run",
            "--drain",
            "--poll-interval",
            "0.2",
            *flags,
            env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(daemons)
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 100)
    assert codes == [0] * daemons


async def backlog(engine: AsyncEngine, rows: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO outbox_messages (recipient, message) "
                "SELECT '92300' || lpad(i::text, 7, '0'), 'Booking ' || i "
                "FROM generate_series(1, :rows) AS i"
            ),
            {"rows": rows},
        )


async def test_three_daemons_together_keep_to_the_rate_in_every_second(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    await backlog(engine, 300)
    await drain_with(database_url, simulator, 3, "--rate", "20")
    assert len(simulator.accepted) == 300
    assert busiest_second(simulator.arrivals) <= 22
    span = max(simulator.arrivals) - min(simulator.arrivals)
    assert 300 / span >= 17  # and still about the rate: 300 in about 15 s


async def test_a_130429_slows_every_daemon_down_for_a_while(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    await backlog(engine, 10)
    script(simulator, "923000000001", {"error": 130429, "http": 400})
    await drain_with(database_url, simulator, 1, "--rate", "40")
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT factor, slow_until > now() AS slowed FROM outbox_limits "
                    "WHERE key = :key"
                ),
                {"key": f"rate:{PHONE}"},
            )
        ).one()
    assert (row.factor, row.slowed) == (0.5, True)
    assert len(simulator.accepted) == 10


async def test_one_daemon_alone_is_paced_by_the_database_bucket(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    await backlog(engine, 60)
    await drain_with(database_url, simulator, 1, "--rate", "20")
    assert busiest_second(simulator.arrivals) <= 22


async def test_per_recipient_pacing_holds_across_daemons(
    database_url: str, engine: AsyncEngine, simulator: Simulator
) -> None:
    for n in range(6):
        await enqueue(engine, "923001112223", f"update {n}")
    await drain_with(
        database_url, simulator, 2, "--pair-burst", "2", "--pair-interval", "1", "--rate", "50"
    )
    times = sorted(simulator.arrivals)
    assert len(times) == 6
    # A burst of two, then one a second, whichever daemon sends each row.
    assert times[-1] - times[0] >= 3.8
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times[1:]))


async def test_a_pair_s_pacing_clock_is_written_with_its_parts(
    engine: AsyncEngine, settings: outbox.Settings, simulator: Simulator
) -> None:
    await enqueue(engine, "923001112224", "hello")
    assert await drain(settings) == 0
    async with engine.connect() as conn:
        due_in = (
            await conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM tat - now()) FROM outbox_limits WHERE key = :key"
                ),
                {"key": f"pair:{PHONE}:923001112224"},
            )
        ).scalar_one()
    assert 0 < due_in <= settings.pair_interval


class RestartingPool:
    """The daemon's pool on a database that refuses the first `refusals` connections."""

    def __init__(self, pool: Pool, refusals: int) -> None:
        self._pool = pool
        self.refusals = refusals

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[asyncpg.Connection]:
        if self.refusals:
            self.refusals -= 1
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
        async with self._pool.connect() as conn:
            yield conn


async def test_a_130429_slows_the_sender_down_once_a_restarting_database_answers(
    pool: Pool, engine: AsyncEngine
) -> None:
    # Issue 15.9: a refusal here crashed the row's delivery (its lease left to run out).
    restarting = RestartingPool(pool, refusals=2)
    await SharedRate(restarting, 20).slow_down(PHONE)  # type: ignore[arg-type]
    assert restarting.refusals == 0
    async with engine.connect() as conn:
        factor = await conn.scalar(
            sa.text("SELECT factor FROM outbox_limits WHERE key = :key"), {"key": f"rate:{PHONE}"}
        )
    assert factor == 0.5


class CountingRate(SharedRate):
    """A SharedRate that counts its round trips to the bucket."""

    takes = 0

    async def _take(self, sender: str, want: int) -> tuple[int, float]:
        self.takes += 1
        return await super()._take(sender, want)


async def test_requests_waiting_together_are_granted_in_one_round_trip(pool: Pool) -> None:
    # Rows started by one claim ask at once: one statement takes all their tokens, rather than
    # one for the first and a second for the rest, each waiter then woken one by one.
    rate = CountingRate(pool, 1000)
    await asyncio.wait_for(asyncio.gather(*(rate.acquire(PHONE) for _ in range(40))), 10)
    assert rate.takes == 1


async def test_requests_beyond_the_burst_wait_for_the_bucket_and_all_go(pool: Pool) -> None:
    rate = CountingRate(pool, 20)  # a burst of 1.5: most of the 6 wait for the bucket
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(asyncio.gather(*(rate.acquire(PHONE) for _ in range(6))), 10)
    assert loop.time() - started >= 4 * (1 / 20)
    assert rate.takes > 1


@pytest.mark.timeout(20)
async def test_a_request_that_finds_the_last_refill_done_asks_again(pool: Pool) -> None:
    # The refill that served others has finished, and the callback forgetting it has not run
    # yet: the request must start a new one, not spin on the finished one without yielding.
    rate = SharedRate(pool, 1000)
    rate.expect(PHONE, 1)
    bucket = rate._buckets[PHONE]
    assert bucket.refill is not None
    await asyncio.wait({bucket.refill})
    finished = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    bucket.refill, bucket.tokens = finished, 0
    await asyncio.wait_for(rate.acquire(PHONE), 5)


async def test_a_request_woken_late_spends_the_token_taken_for_it(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loop so busy that the token's time to live passes before the waiter runs again: the
    # token was taken for it, so it is spent, not left to expire while another take is made.
    monkeypatch.setattr("outbox.delivery.rate.TOKEN_TTL", 0.0)
    rate = CountingRate(pool, 1000)
    await asyncio.wait_for(rate.acquire(PHONE), 5)
    assert rate.takes == 1


async def test_a_take_under_way_is_cancelled_when_the_daemon_stops() -> None:
    # The database is away: the take retries until it answers; a stopping daemon must not
    # leave it running (it would open a pool again after the daemon closed its own).
    rate = SharedRate(Pool("postgresql://postgres@127.0.0.1:1/nothing"), 1000)
    waiting = asyncio.create_task(rate.acquire(PHONE))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    rate.stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    assert rate._buckets[PHONE].refill is None
