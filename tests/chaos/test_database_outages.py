"""PostgreSQL away for longer than the lease, under several daemons: cut off behind a TCP proxy,
then really stopped. Accepted wamids wait in memory; nothing is lost, stuck or sent again.

When a daemon loses the database but not the Graph API, the daemon that takes its rows over
cannot know from the database whether the part in flight was accepted: Meta's status webhook
tells it. Those scenarios run the webhook receiver, as production with META_APP_SECRET does.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import MakeRound
from tests.chaos.harness import Round, assert_guarantees, scaled
from tests.chaos.postgres import PrivatePostgres
from tests.proxy import PostgresProxy

DAEMONS = 3
LEASE = 2.0
AWAY = 1.5 * LEASE  # past every lease
FLAGS = {"--lease-seconds": str(LEASE)}
RECONCILING = {**FLAGS, "--reconcile-seconds": "10"}


@pytest.mark.timeout(240)
async def test_a_database_cut_off_longer_than_the_lease_loses_and_repeats_nothing(
    chaos: MakeRound,
) -> None:
    chaos_round = await chaos("database cut off (proxy) > lease", scaled(40))
    proxy = PostgresProxy(chaos_round.database_url)
    proxied = await proxy.start()
    try:
        await chaos_round.load.fill(scaled(120))
        producing = asyncio.create_task(chaos_round.load.produce(scaled(40), seconds=AWAY))
        environ = await chaos_round.enter(chaos_round.receiver())
        await chaos_round.spawn(DAEMONS, database_url=proxied, flags=RECONCILING, environ=environ)
        await chaos_round.accepted_reach(chaos_round.load.parts / 4)
        proxy.cut()  # the app still reaches the database: its rows keep coming
        await asyncio.sleep(AWAY)
        proxy.restore()
        await producing
        await chaos_round.until_done(within=60)
        figures = await chaos_round.finish()
    finally:
        await proxy.close()
    assert_guarantees(figures)


async def cut_off_round(
    chaos_round: Round, rows: int, cut_off: int, flags: dict[str, str], webhooks: bool
) -> None:
    """`cut_off` daemons reach PostgreSQL through a proxy that is cut for longer than the lease;
    one more has its own path and takes their rows over."""
    chaos_round.simulator.latency_ms = 50  # most rows have a request in flight at the cut
    proxy = PostgresProxy(chaos_round.database_url)
    proxied = await proxy.start()
    try:
        await chaos_round.load.fill(rows)
        environ = await chaos_round.enter(chaos_round.receiver()) if webhooks else None
        await chaos_round.spawn(cut_off, database_url=proxied, flags=flags, environ=environ)
        await chaos_round.spawn(1, flags=flags, environ=environ)
        await chaos_round.accepted_reach(chaos_round.load.parts / 4)
        proxy.cut()
        await asyncio.sleep(AWAY)
        proxy.restore()
        await chaos_round.until_done(within=60)
        figures = await chaos_round.finish()
    finally:
        await proxy.close()
    assert_guarantees(figures)


@pytest.mark.timeout(240)
async def test_daemons_cut_off_from_the_database_while_another_runs_repeat_no_part(
    chaos: MakeRound,
) -> None:
    chaos_round = await chaos("2 of 3 daemons cut off > lease", scaled(40))
    await cut_off_round(chaos_round, scaled(120), DAEMONS - 1, RECONCILING, webhooks=True)


@pytest.mark.timeout(240)
async def test_a_daemon_cut_off_past_its_lease_without_webhooks_has_nothing_resent(
    chaos: MakeRound,
) -> None:
    # No receiver, no reconcile window (the default without META_APP_SECRET): only the grace
    # before a takeover lets the cut-off daemon record what it sent before another resends it.
    chaos_round = await chaos("1 of 2 daemons cut off > lease, no webhook", scaled(40))
    await cut_off_round(chaos_round, scaled(200), 1, FLAGS, webhooks=False)


@pytest.mark.timeout(240)
async def test_postgres_stopped_longer_than_the_lease_loses_and_repeats_nothing(
    chaos: MakeRound, chaos_postgres: PrivatePostgres
) -> None:
    chaos_round = await chaos("PostgreSQL stopped > lease", scaled(40))
    await chaos_round.load.fill(scaled(120))
    producing = asyncio.create_task(chaos_round.load.produce(scaled(40), seconds=AWAY))
    await chaos_round.spawn(DAEMONS, flags=FLAGS)
    await chaos_round.accepted_reach(chaos_round.load.parts / 4)
    async with chaos_round.load.held():  # the app waits for its database too
        await asyncio.to_thread(chaos_postgres.stop_server)
        await asyncio.sleep(AWAY)
        await asyncio.to_thread(chaos_postgres.start_server)
    await producing
    await chaos_round.until_done(within=60)
    assert_guarantees(await chaos_round.finish())


@pytest.mark.timeout(300)
async def test_a_daemon_rides_out_postgres_restarted_again_and_again(
    chaos: MakeRound, chaos_postgres: PrivatePostgres
) -> None:
    # Issue 15.9: `outbox run` exited 1 ("the database system is shutting down") while its
    # PostgreSQL was restarted four times. Every answer of a server going down or coming up is
    # an outage to wait out, and no part may go out twice.
    chaos_round = await chaos("PostgreSQL restarted 4 times", scaled(20))
    chaos_round.simulator.latency_ms = 20  # requests in flight at every stop
    await chaos_round.load.fill(scaled(60))
    (daemon,) = await chaos_round.spawn(1, flags={"--lease-seconds": "3"})
    for away in (2.0, 4.5, 3.0, 5.0):  # past the lease (3 s) but one
        await chaos_round.load.produce(scaled(20), seconds=1.0)
        await chaos_round.accepted_reach(len(chaos_round.simulator.accepted) + 5, within=10)
        async with chaos_round.load.held():  # the app waits for its database too
            await asyncio.to_thread(chaos_postgres.stop_server)
            await asyncio.sleep(away)
            await asyncio.to_thread(chaos_postgres.start_server)
        assert daemon.alive, f"the daemon exited {daemon.process.returncode}:\n{daemon.log_tail()}"
    assert await chaos_round.until_done(within=90), "rows left unsent by the daemon"
    assert daemon.alive, f"the daemon exited {daemon.process.returncode}:\n{daemon.log_tail()}"
    figures = await chaos_round.finish()
    assert_guarantees(figures)
    assert figures.duplicated == 0, "\n".join(figures.notes)


@pytest.mark.timeout(240)
async def test_a_daemon_started_while_postgres_restarts_waits_for_it(
    chaos: MakeRound, chaos_postgres: PrivatePostgres
) -> None:
    # Issue 15.9: the startup schema check took a database on its way down or up for a fatal
    # error; `outbox run` exited 1 and its rows waited for a human.
    chaos_round = await chaos("daemon started, PostgreSQL down", scaled(10))
    await chaos_round.load.fill(scaled(30))
    await asyncio.to_thread(chaos_postgres.stop_server)
    (daemon,) = await chaos_round.spawn(1)
    for _ in range(300):  # until it waits for the database (or, before the fix, exits)
        if not daemon.alive or "retrying" in daemon.log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(chaos_postgres.start_server)
    assert await chaos_round.until_done(within=60), daemon.log_tail()
    assert daemon.alive, f"the daemon exited {daemon.process.returncode}:\n{daemon.log_tail()}"
    assert_guarantees(await chaos_round.finish())
