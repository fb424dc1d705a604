"""Shared fixtures: a real PostgreSQL for the session, a migrated template, a fresh copy per test.

The server is the one named by OUTBOX_TEST_DATABASE_URL, else an embedded PostgreSQL started in a
temporary directory for this session. Tests never skip for lack of a database. Every server and
process a test starts is stopped by the end of the run, or the run fails (tests/leftovers.py).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import embedded, migrate
from outbox.database import asyncpg_dsn, create_engine
from outbox.pool import Pool
from tests.leftovers import pytest_configure, pytest_sessionfinish

__all__ = ["pytest_configure", "pytest_sessionfinish"]  # hooks of tests/leftovers.py, for this run

ROOT = Path(__file__).resolve().parent.parent


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin(dsn: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE/DROP DATABASE need that)."""
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def sync_engine(dsn: str) -> sa.Engine:
    return sa.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn))


def migrate_with(dsn: str, revision: str = "head", *, down: bool = False) -> None:
    """Run the alembic revisions on a sync connection (no event loop needed)."""
    engine = sync_engine(dsn)
    try:
        with engine.begin() as connection:
            config = migrate.alembic_config()
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


class EmbeddedHomes:
    """Fresh OUTBOX_HOME folders for this run, in a folder of its own outside pytest's basetemp: as
    root the server runs as its own user, and any pytest run starting meanwhile makes basetemp's
    parent (/tmp/pytest-of-root) private again, cutting that user off from its data."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="outbox-test-"))
        if os.geteuid() == 0:
            self.root.chmod(0o755)  # the server's user must pass through it

    def new(self, name: str) -> Path:
        """An empty folder to use as OUTBOX_HOME; start() creates the server's data inside."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))

    def remove(self, home: Path) -> None:
        """Stop this process's server under `home` (if any) and delete the folder."""
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)

    def close(self) -> None:
        for home in list(self.root.iterdir()):
            self.remove(home)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs a command in-process configures the root logger (outbox run, webhook,
    dashboard do): restored after it, so later tests' stderr holds only their own output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def embedded_homes() -> Iterator[EmbeddedHomes]:
    homes = EmbeddedHomes()
    yield homes
    homes.close()


@pytest.fixture
def outbox_home(embedded_homes: EmbeddedHomes) -> Iterator[Path]:
    """An OUTBOX_HOME for one test; its server (if this process started one) stops afterwards."""
    home = embedded_homes.new("outbox-home")
    yield home
    embedded_homes.remove(home)


@pytest.fixture(scope="session")
def server_dsn(embedded_homes: EmbeddedHomes) -> Iterator[str]:
    """A maintenance-database URL on the session's PostgreSQL server."""
    url = os.environ.get("OUTBOX_TEST_DATABASE_URL", "").strip()
    if url:
        yield asyncpg_dsn(url)
        return
    home = embedded_homes.new("embedded-postgres")
    try:
        yield embedded.start(home)
    finally:
        embedded_homes.remove(home)


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    name = f"outbox_template_{uuid.uuid4().hex[:8]}"
    admin(server_dsn, f'CREATE DATABASE "{name}"')
    migrate_with(with_database(server_dsn, name))
    yield name
    admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Dropper:
    """Drops the tests' databases in a thread of its own, so that the next test need not wait
    for the last one's DROP; a few at most wait their turn (then the test waits), and all are
    gone before the server stops."""

    BACKLOG = 4

    def __init__(self, server_dsn: str) -> None:
        self._server_dsn = server_dsn
        self._names: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
        self._thread.start()

    def drop(self, name: str) -> None:
        if self._names.qsize() >= self.BACKLOG:
            self._names.join()
        self._names.put(name)

    def close(self) -> None:
        self._names.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                admin(self._server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error as exc:  # left for the server's end; the run goes on
                logging.getLogger(__name__).warning("could not drop %s: %s", name, exc)
            finally:
                self._names.task_done()
        self._names.task_done()


@pytest.fixture(scope="session")
def dropper(server_dsn: str) -> Iterator[Dropper]:
    dropper = Dropper(server_dsn)
    yield dropper
    dropper.close()


@pytest.fixture
def empty_database_url(server_dsn: str, dropper: Dropper) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"outbox_empty_{uuid.uuid4().hex[:10]}"
    admin(server_dsn, f'CREATE DATABASE "{name}"')
    yield with_database(server_dsn, name)
    dropper.drop(name)


@pytest.fixture
def database_url(server_dsn: str, template_database: str, dropper: Dropper) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"outbox_test_{uuid.uuid4().hex[:10]}"
    admin(server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(server_dsn, name)
    dropper.drop(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    """The daemon's kind of connection pool, on the test's database."""
    pool = Pool(database_url)
    yield pool
    await pool.close(5)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    """Point the CLI at the test's database."""
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    return database_url
