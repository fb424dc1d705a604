"""Fixtures for daemon tests: a simulator on a free port and settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import outbox
from outbox.simulator import Simulator, serve
from tests.daemon_helpers import PHONE, TOKEN


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    simulator = Simulator(access_token=TOKEN, phone_number_id=PHONE)
    runner = await serve(simulator, "127.0.0.1", 0)
    simulator.url = f"http://127.0.0.1:{runner.addresses[0][1]}"  # type: ignore[attr-defined]
    yield simulator
    await runner.cleanup()


@pytest.fixture
def settings(database_url: str, simulator: Simulator) -> outbox.Settings:
    return outbox.Settings(
        database_url=database_url,
        access_token=TOKEN,
        phone_number_id=PHONE,
        graph_api_url=simulator.url,  # type: ignore[attr-defined]
        poll_interval=0.2,
        retry_delay=0.05,
        quick_retry_delay=0.0,
        pause_probe=0.2,
        shutdown_timeout=5,
        media_mode="link",  # tests link to hosts that do not exist (test_media.py uploads)
    )
