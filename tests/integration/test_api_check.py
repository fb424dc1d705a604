"""`outbox run` refuses to start when the Graph API's host cannot be connected to at all, naming
META_GRAPH_API_URL; a host that answers, even with errors, or that comes up within the startup
wait, is fine, and a host that does not answer in time is only warned about."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

import outbox
from outbox.delivery import reach
from outbox.delivery.daemon import Daemon
from outbox.delivery.startup import API_STARTUP_WAIT
from outbox.simulator import Simulator, serve
from tests.daemon_helpers import PHONE, TOKEN, cli_path

pytestmark = pytest.mark.timeout(90)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_drain(
    database_url: str, graph_url: str, waiting: asyncio.Event | None = None
) -> tuple[int, list[str], float]:
    """`outbox run --drain` against `graph_url`: exit code, stderr lines, seconds taken.
    `waiting` is set once it says it waits for META_GRAPH_API_URL."""
    env = {
        **os.environ,
        "OUTBOX_DATABASE_URL": database_url,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": graph_url,
    }
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(cli_path()),
        *("run", "--drain", "--poll-interval", "0.2"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines = []

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            lines.append(raw.decode().rstrip("\n"))
            if waiting is not None and "META_GRAPH_API_URL" in lines[-1]:
                waiting.set()
        await process.wait()

    await asyncio.wait_for(read(), 60)
    assert process.returncode is not None
    return process.returncode, lines, time.monotonic() - started


@pytest.fixture
async def answers_404() -> AsyncIterator[str]:
    """An HTTP server with no routes: every request is answered 404."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_host_that_does_not_resolve_is_refused_at_once_naming_the_variable(
    database_url: str,
) -> None:
    code, lines, seconds = await run_drain(database_url, "https://graph.facebok.invalid")
    assert code == 1
    assert lines == [
        "outbox: the Graph API at https://graph.facebok.invalid cannot be reached: cannot "
        f"resolve the host graph.facebok.invalid ({lines[0].split('(', 1)[1]}"
    ]
    assert lines[0].endswith("; check META_GRAPH_API_URL")
    assert seconds < API_STARTUP_WAIT


async def test_a_port_nothing_listens_on_is_refused_after_the_startup_wait(
    database_url: str,
) -> None:
    port = closed_port()
    code, lines, seconds = await run_drain(database_url, f"http://127.0.0.1:{port}")
    assert code == 1
    assert lines[-1] == (
        f"outbox: the Graph API at http://127.0.0.1:{port} cannot be reached: cannot connect "
        f"to 127.0.0.1 port {port} (Connection refused), for {API_STARTUP_WAIT:.0f}s; check "
        "META_GRAPH_API_URL"
    )
    assert seconds >= API_STARTUP_WAIT


async def test_a_host_that_answers_with_errors_is_fine(database_url: str, answers_404: str) -> None:
    code, lines, _ = await run_drain(database_url, answers_404)
    assert code == 0, lines


async def test_an_api_that_comes_up_within_the_startup_wait_is_fine(database_url: str) -> None:
    port = closed_port()
    waiting = asyncio.Event()
    drain = asyncio.create_task(run_drain(database_url, f"http://127.0.0.1:{port}", waiting))
    await asyncio.wait_for(waiting.wait(), 30)  # it found the API down, and waits for it
    runner = await serve(Simulator(access_token=TOKEN, phone_number_id=PHONE), "127.0.0.1", port)
    try:
        code, lines, _ = await drain
    finally:
        await runner.cleanup()
    assert code == 0, lines
    assert "META_GRAPH_API_URL" in lines[0]  # it said what it waits for


async def test_a_host_that_does_not_answer_in_time_is_warned_about_and_the_daemon_starts(
    settings: outbox.Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_answering(host: str, port: int) -> reach.Refusal | None:
        raise reach.NotAnswering(f"{host} port {port} did not answer within 5s")

    monkeypatch.setattr(reach, "refusal", not_answering)
    caplog.set_level(logging.WARNING, logger="outbox.daemon")
    assert await asyncio.wait_for(Daemon(settings, drain=True, check_api=True).run(), 30) == 0
    (warning,) = [r.getMessage() for r in caplog.records if "META_GRAPH_API_URL" in r.getMessage()]
    assert "did not answer within 5s; starting anyway" in warning


async def test_an_app_running_the_daemon_is_not_checked_unless_it_asks(
    settings: outbox.Settings,
) -> None:
    dead = outbox.Settings(**{**settings.__dict__, "graph_api_url": "http://graph.invalid"})
    assert await asyncio.wait_for(Daemon(dead, drain=True).run(), 30) == 0
