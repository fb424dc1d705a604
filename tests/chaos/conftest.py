"""Fixtures of the chaos suite: a private embedded PostgreSQL for the session, one round per test
(fresh database, simulator, daemons, load), the figures table at the end of the run, and a reaper
that SIGKILLs any daemon a failed round left behind.

`make test` runs the short version (CHAOS_ROUNDS=2, small backlogs); `make chaos` the long one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from outbox.simulator import Simulator
from tests.chaos import invariants
from tests.chaos.fleet import PHONE, TOKEN, Fleet
from tests.chaos.harness import SEED, Api, Round
from tests.chaos.load import Load, recipients
from tests.chaos.postgres import PrivatePostgres

FIGURES = pytest.StashKey[list[invariants.Figures]]()
MakeRound = Callable[[str, int], Awaitable[Round]]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rounds = config.stash.get(FIGURES, [])
    if rounds:
        terminalreporter.write_sep("=", f"chaos rounds (seed {SEED})")
        terminalreporter.write_line(invariants.table(rounds))
        terminalreporter.write_line(invariants.LEGEND)


@pytest.fixture(scope="session")
def reaper() -> Iterator[list[asyncio.subprocess.Process]]:
    """Every daemon started; any a failed round left running is SIGKILLed at the end. Only
    children never waited for: their pids cannot have been reused by another process."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def chaos_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's basetemp: as root the server runs as its own user, and any pytest
    # session starting meanwhile makes /tmp/pytest-of-root private again (chmod 700).
    home = Path(tempfile.mkdtemp(prefix="outbox-chaos-"))
    postgres = PrivatePostgres(home)
    try:
        postgres.start()
        yield postgres
    finally:
        try:
            postgres.close()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def chaos(
    request: pytest.FixtureRequest,
    chaos_postgres: PrivatePostgres,
    reaper: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> AsyncIterator[MakeRound]:
    """make_round(scenario, recipients): a round on a fresh database; closed after the test."""
    rounds: list[Round] = []

    async def make_round(scenario: str, to: int) -> Round:
        database_url = await asyncio.to_thread(chaos_postgres.create_database)
        api = Api(Simulator(access_token=TOKEN, phone_number_id=PHONE, latency_ms=5))
        rng = random.Random(f"{SEED}:{request.node.name}")  # noqa: S311 (chaos, not secrets)
        chaos_round = Round(
            name=scenario,
            database_url=database_url,
            api=api,
            fleet=Fleet(api.endpoint, tmp_path, reaper),
            load=Load(database_url, rng, recipients(to)),
            rng=rng,
        )
        rounds.append(chaos_round)
        await api.start()
        return chaos_round

    yield make_round
    for chaos_round in rounds:
        await chaos_round.fleet.close()
        await chaos_round.resources.aclose()
        await chaos_round.api.close()
        if chaos_round.figures is not None:
            request.config.stash[FIGURES].append(chaos_round.figures)
        if not chaos_postgres.running:
            await asyncio.to_thread(chaos_postgres.start_server)
        await asyncio.to_thread(chaos_postgres.drop_database, chaos_round.database_url)
