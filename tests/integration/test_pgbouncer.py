"""Through a real PgBouncer in transaction pooling mode: the daemon drains, `enqueue` joins the
caller's transaction, `outbox migrate` applies the schema, and LISTEN, which cannot work there,
is reported once while polling delivers anyway.

PgBouncer's pool here has two server connections, so clients keep sharing them: any prepared
statement left behind on one would clash or go missing at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import outbox
from outbox import migrate
from outbox.database import create_engine
from outbox.delivery.listen import NotificationListener
from outbox.direct import reaches_postgres_itself
from outbox.simulator import Simulator
from tests.conftest import sync_engine
from tests.daemon_helpers import IMAGE, PHONE, TOKEN, VIDEO, sent
from tests.pgbouncer import PgBouncer, pgbouncer_binary

BIN = Path(sys.executable).parent
LISTEN_WARNING = "LISTEN does not work"


@pytest.fixture(scope="session")
def pgbouncer_path() -> str:
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("no pgbouncer binary: `apt-get install pgbouncer` (.ci/run installs it)")
    return binary


def _through_pgbouncer(binary: str, database_url: str) -> Iterator[str]:
    bouncer = PgBouncer(binary, pool_size=2)
    try:
        yield bouncer.start(database_url)
    finally:
        bouncer.stop()


@pytest.fixture
def pooled_url(pgbouncer_path: str, database_url: str) -> Iterator[str]:
    """The test's migrated database, through its own PgBouncer (transaction pooling)."""
    yield from _through_pgbouncer(pgbouncer_path, database_url)


@pytest.fixture
def pooled_empty_url(pgbouncer_path: str, empty_database_url: str) -> Iterator[str]:
    yield from _through_pgbouncer(pgbouncer_path, empty_database_url)


def outbox_env(
    database_url: str, simulator: Simulator | None = None, **extra: str
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OUTBOX_")}
    env.update(
        OUTBOX_DATABASE_URL=database_url,
        META_ACCESS_TOKEN=TOKEN,
        META_PHONE_NUMBER_ID=PHONE,
        OUTBOX_MEDIA_MODE="link",  # its media links name hosts that do not exist
    )
    if simulator is not None:
        env["META_GRAPH_API_URL"] = simulator.url  # type: ignore[attr-defined]
    return {**env, **extra}


def sql(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def statuses(database_url: str) -> dict[int, str]:
    return dict(sql(database_url, "SELECT id, status FROM outbox_messages"))


async def enqueue_through(engine: AsyncEngine, recipient: str, text: str, **kwargs: object) -> int:
    async with engine.begin() as conn:
        return await outbox.enqueue(conn, recipient, text, **kwargs)  # type: ignore[arg-type]


async def run_drain(env: dict[str, str], *args: str) -> tuple[int, str]:
    daemon = await asyncio.create_subprocess_exec(
        str(BIN / "outbox"),
        "run",
        "--drain",
        *args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(daemon.communicate(), 60)
    assert daemon.returncode is not None
    return daemon.returncode, stderr.decode()


async def test_the_daemon_drains_rows_through_pgbouncer_with_listen_on_a_direct_url(
    pooled_url: str, database_url: str, simulator: Simulator
) -> None:
    engine = create_engine(pooled_url)
    try:
        ids = [
            await enqueue_through(
                engine,
                f"92300123450{n % 3}",
                f"message {n}",
                media_urls={"images": [IMAGE], "videos": [VIDEO]},
            )
            for n in range(12)
        ]
    finally:
        await engine.dispose()

    env = outbox_env(
        pooled_url, simulator, OUTBOX_LISTEN_URL=database_url, OUTBOX_PREPARED_STATEMENTS="auto"
    )
    code, stderr = await run_drain(env, "--concurrency", "8", "--poll-interval", "0.5")

    assert code == 0, stderr
    assert LISTEN_WARNING not in stderr
    assert "prepared statement" not in stderr
    assert "statements not kept prepared (a pooler or proxy may be in between" in stderr
    assert statuses(database_url) == dict.fromkeys(ids, "sent")
    callbacks = sent(simulator)
    for row in ids:  # every part once, in order
        assert [c for c in callbacks if c.startswith(f"outbox:{row}:")] == [
            f"outbox:{row}:{part}" for part in range(3)
        ]


async def test_listen_through_pgbouncer_is_reported_once_and_polling_still_delivers(
    pooled_url: str, database_url: str, simulator: Simulator
) -> None:
    simulator.latency_ms = (
        800  # one recipient's rows go one at a time: the drain outlasts the probe
    )
    engine = create_engine(pooled_url)
    try:
        ids = [await enqueue_through(engine, "923001234500", f"slow {n}") for n in range(7)]
        daemon = await asyncio.create_subprocess_exec(
            str(BIN / "outbox"),
            "run",
            "--drain",
            "--poll-interval",
            "0.5",
            env=outbox_env(pooled_url, simulator),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert daemon.stderr is not None
        lines: list[str] = []
        try:
            while LISTEN_WARNING not in (lines[-1] if lines else ""):
                line = await asyncio.wait_for(daemon.stderr.readline(), 30)
                assert line, f"the daemon ended without the warning: {''.join(lines)}"
                lines.append(line.decode())
            # NOTIFY cannot wake it now: this row is found by polling.
            ids.append(await enqueue_through(engine, "923001234599", "after the warning"))
            rest = await asyncio.wait_for(daemon.stderr.read(), 60)
            await asyncio.wait_for(daemon.wait(), 10)
        finally:
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
    finally:
        await engine.dispose()
    stderr = "".join(lines) + rest.decode()

    assert daemon.returncode == 0, stderr
    warnings = [line for line in stderr.splitlines() if LISTEN_WARNING in line]
    assert len(warnings) == 1, stderr
    assert "OUTBOX_LISTEN_URL" in warnings[0]
    assert statuses(database_url) == dict.fromkeys(ids, "sent")


async def test_enqueue_through_pgbouncer_commits_and_rolls_back_with_the_caller(
    pooled_url: str, database_url: str
) -> None:
    engine = create_engine(pooled_url)
    try:
        kept = await enqueue_through(engine, "923001234567", "kept")
        async with engine.connect() as conn:
            await outbox.enqueue(conn, "923001234567", "rolled back")
            await conn.rollback()
        async with engine.connect() as conn:
            assert (await outbox.get_status(conn, kept)).status == "pending"
    finally:
        await engine.dispose()

    raw = await asyncpg.connect(pooled_url, statement_cache_size=0)
    try:
        async with raw.transaction():
            on_asyncpg = await outbox.enqueue(raw, "923001234567", "asyncpg")
        transaction = raw.transaction()
        await transaction.start()
        await outbox.enqueue(raw, "923001234567", "asyncpg, rolled back")
        await transaction.rollback()
    finally:
        await raw.close()

    sync = sync_engine(pooled_url)
    try:
        with sync.begin() as conn:
            on_psycopg2 = outbox.enqueue_sync(conn, "923001234567", "psycopg2")
        with sync.connect() as conn:
            outbox.enqueue_sync(conn, "923001234567", "psycopg2, rolled back")
            conn.rollback()
    finally:
        sync.dispose()

    rows = sql(database_url, "SELECT id, message FROM outbox_messages ORDER BY id")
    assert rows == [(kept, "kept"), (on_asyncpg, "asyncpg"), (on_psycopg2, "psycopg2")]


def app_engine(url: str) -> AsyncEngine:
    """An app's own engine, set up for PgBouncer as the README says."""
    return create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://", 1),
        pool_size=10,
        connect_args={"statement_cache_size": 0, "prepared_statement_name_func": lambda: ""},
    )


@pytest.mark.parametrize(
    "make_engine",
    [lambda url: create_engine(url, pool_size=10), app_engine],
    ids=["outbox-engine", "app-engine"],
)
async def test_concurrent_transactions_share_pgbouncer_connections_without_statement_clashes(
    pooled_url: str, database_url: str, make_engine: Callable[[str], AsyncEngine]
) -> None:
    engine = make_engine(pooled_url)

    async def client(n: int) -> None:
        for i in range(10):
            async with engine.begin() as conn:
                row = await outbox.enqueue(conn, f"9230012{n:02d}{i:03d}", "hello")
                assert (await outbox.get_status(conn, row)).status == "pending"
            async with engine.connect() as conn:
                await outbox.list_messages(conn, limit=3)

    try:
        await asyncio.gather(*(client(n) for n in range(10)))
    finally:
        await engine.dispose()
    assert sql(database_url, "SELECT count(*) FROM outbox_messages") == [(100,)]


def test_outbox_enqueue_status_and_list_work_through_pgbouncer(pooled_url: str) -> None:
    env = outbox_env(pooled_url)

    def outbox_cli(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "outbox"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        return done.stdout

    row = outbox_cli("enqueue", "923001234567", "Hello", "--image", IMAGE).strip()
    assert row.isdigit()
    assert json.loads(outbox_cli("status", row, "--json"))["status"] == "pending"
    assert [listed["id"] for listed in json.loads(outbox_cli("list", "--json"))] == [int(row)]


def test_outbox_migrate_works_through_pgbouncer_also_concurrently(
    pooled_empty_url: str, empty_database_url: str
) -> None:
    env = outbox_env(pooled_empty_url)
    processes = [
        subprocess.Popen(
            [str(BIN / "outbox"), "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == f"schema at revision {migrate.head_revision()}"

    engine = sync_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            assert conn.execute(sa.text("SELECT count(*) FROM outbox_messages")).scalar() == 0
    finally:
        engine.dispose()


class CountingListener(NotificationListener):
    probes = 0

    async def _probe(self, conn: asyncpg.Connection) -> None:
        self.probes += 1
        await super()._probe(conn)


async def test_the_listener_behind_pgbouncer_warns_once_however_often_it_looks_again(
    pooled_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox.listener")
    wakes: list[int] = []
    listener = CountingListener(
        pooled_url, lambda: wakes.append(1), probe_timeout=0.5, recheck_interval=0.1
    )
    listener.start()
    try:
        # The first look fails after the probe's 0.5 s; then one every 0.6 s or so, silently.
        await asyncio.sleep(3.0)
    finally:
        await listener.stop()

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert LISTEN_WARNING in warnings[0]
    assert "OUTBOX_LISTEN_URL" in warnings[0]
    assert listener.probes >= 3
    assert not listener.listening
    assert wakes == []


async def test_the_listener_behind_pgbouncer_leaves_no_named_statement_on_its_server(
    pgbouncer_path: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement left prepared on PgBouncer's one server connection would clash with (or be
    run by) the next client's statement of the same name."""
    caplog.set_level(logging.INFO, logger="outbox.listener")
    bouncer = PgBouncer(pgbouncer_path, pool_size=1)
    url = bouncer.start(database_url)
    try:
        listener = NotificationListener(url, lambda: None, probe_timeout=0.5)
        listener.start()
        try:
            await asyncio.sleep(1.5)
        finally:
            await listener.stop()
        assert sql(url, "SELECT count(*) FROM pg_prepared_statements") == [(0,)]
    finally:
        bouncer.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings
    assert "already exists" not in warnings[0]


async def test_the_listener_on_a_direct_url_proves_listen_and_wakes_on_notify(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outbox.listener")
    woken = asyncio.Event()
    listener = NotificationListener(database_url, woken.set)
    listener.start()
    try:
        await asyncio.wait_for(woken.wait(), 10)  # every (re)connection wakes the daemon
        assert listener.listening
        woken.clear()
        notifier = await asyncpg.connect(database_url)
        try:
            await notifier.execute("NOTIFY outbox")
        finally:
            await notifier.close()
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await listener.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_connection_through_pgbouncer_is_never_taken_for_postgresql_itself(
    pooled_url: str,
) -> None:
    conn = await asyncpg.connect(pooled_url, statement_cache_size=0)
    try:
        assert not await reaches_postgres_itself(conn)
    finally:
        await conn.close()
