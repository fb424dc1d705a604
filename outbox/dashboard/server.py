"""`outbox dashboard`: serve the dashboard until SIGTERM/SIGINT, or print a password's hash."""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys

from aiohttp import web

from outbox.dashboard.app import create_app
from outbox.dashboard.users import hash_password
from outbox.logs import configure_logging
from outbox.settings import Settings


def print_hash() -> int:
    """`outbox dashboard --hash-password`: read a password (twice at a terminal, once from a
    pipe) and print its bcrypt hash, for a `name:role:hash` line of OUTBOX_DASHBOARD_USERS."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("outbox: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("outbox: an empty password is refused", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def run(settings: Settings, *, host: str, port: int) -> int:
    app = create_app(settings)  # no users: refused before anything starts
    configure_logging(settings)

    async def main() -> int:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            print(f"dashboard listening on http://{host}:{port}/", flush=True)
            await stopped.wait()
        finally:
            await runner.cleanup()
        return 0

    return asyncio.run(main())
