"""One chromium (Debian's, never a downloaded build) per module, a dashboard server per test on
a real port, and a folder for the screenshots under pytest's tmp path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.sync_api import Browser, Playwright, sync_playwright

from outbox.dashboard import create_app
from outbox.database import create_engine
from outbox.settings import Settings
from tests.dashboard_helpers import ACCESS_TOKEN, APP_SECRET, seed, users


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(executable_path=chromium, args=args, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\ndashboard screenshots: {folder}")
    return folder


class Served:
    """The dashboard on 127.0.0.1, in a thread with its own event loop (Playwright's sync API
    wants the test's thread free of one)."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None)
        self.port = self._call(self._start())

    def _call(self, coroutine: object) -> int:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _stop(self) -> int:
        await self.runner.cleanup()
        return 0

    def close(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def rows(database_url: str) -> dict[str, int]:
    async def seeded() -> dict[str, int]:
        engine = create_engine(database_url)
        try:
            return await seed(engine)
        finally:
            await engine.dispose()

    # Playwright's sync API keeps an event loop running in this thread: seed from another.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, seeded()).result(60)


@pytest.fixture
def dashboard(database_url: str, rows: dict[str, int]) -> Iterator[str]:
    """The dashboard's URL, with its cookies Secure as in production (chromium keeps them on
    http://localhost)."""
    settings = Settings(database_url=database_url, access_token=ACCESS_TOKEN, app_secret=APP_SECRET)
    served = Served(create_app(settings, users=users()))
    yield f"http://localhost:{served.port}"
    served.close()
