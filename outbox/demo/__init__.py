"""`outbox demo`: the outbox's promise in six short chapters, on a real database (story.py).

The database is OUTBOX_DATABASE_URL when set, else an embedded PostgreSQL of the demo's own under
OUTBOX_HOME/demo whose database is recreated on every run. The rows stay there to explore; every
process the demo starts is stopped before it returns, whatever ends it. `python -m outbox.demo
psql` opens psql where the other commands would look (the embedded server runs while it does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from outbox import embedded, migrate
from outbox.dashboard.users import hash_password
from outbox.database import asyncpg_dsn
from outbox.demo.stage import Stage, create_bookings_table
from outbox.demo.story import tell
from outbox.errors import ConfigurationError
from outbox.settings import Settings, redact_url

DEMO_KEYS = "demo:%"  # the idempotency keys of the demo's messages


def demo_home(settings: Settings) -> Path:
    """The demo's own embedded server: never the one holding the user's messages."""
    return settings.home / "demo"


def run_demo(settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    home = None if settings.database_url else demo_home(settings)
    workdir = Path(tempfile.mkdtemp(prefix="outbox-demo-"))
    try:
        return asyncio.run(_demo(settings, home, workdir))
    except asyncio.CancelledError:  # SIGTERM: everything is stopped by now
        print("outbox demo: stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if home is not None:
            embedded.stop(home)
        shutil.rmtree(workdir, ignore_errors=True)


async def _demo(settings: Settings, home: Path | None, workdir: Path) -> int:
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    dsn = await _prepare(settings, home)
    stage = Stage(dsn, workdir)
    try:
        await stage.open()
        pid = await stage.start_daemon()
        _introduce(settings, home, stage, pid)
        listing = await tell(stage)
    except Exception:
        if tail := stage.log_tail():
            print(tail, file=sys.stderr)  # the daemon's side of what went wrong
        raise
    finally:
        try:
            await stage.close()
        finally:
            stage.kill_leftovers()
    await _closing(settings, home, listing)
    return 0


def _introduce(settings: Settings, home: Path | None, stage: Stage, pid: int) -> None:
    where = (
        f"embedded, in {_tilde(home)} (recreated)"
        if home
        else f"OUTBOX_DATABASE_URL ({redact_url(settings.database_url or '')})"
    )
    print("outbox demo: a holiday-lettings site writes its guests' WhatsApp messages in the")
    print("transactions of its bookings; the outbox delivers them. All measured, this run:")
    print(f"  PostgreSQL  {where}")
    print(f"  Graph API   the simulator at {stage.api_url}, posting signed status webhooks to")
    print(f"  receiver    the `outbox webhook` app at {stage.webhook_url}")
    print(f"  daemon      `outbox run`, a process of its own (pid {pid})", flush=True)


async def _prepare(settings: Settings, home: Path | None) -> str:
    """The demo's database, migrated, with no messages and a fresh bookings table."""
    if home is None:
        assert settings.database_url
        dsn = asyncpg_dsn(settings.database_url)
        await _check_reusable(dsn)
    else:
        dsn = await asyncio.to_thread(embedded.start, home)
        await _recreate(dsn)
    await asyncio.to_thread(migrate.upgrade, dsn)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(
                "DELETE FROM outbox_messages WHERE idempotency_key LIKE $1", DEMO_KEYS
            )
            await create_bookings_table(connection)
    finally:
        await connection.close()
    return dsn


async def _recreate(dsn: str) -> None:
    """Drop and create the embedded server's database, so that every run starts clean."""
    server = urlunsplit(urlsplit(dsn)._replace(path="/postgres"))
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{embedded.DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{embedded.DATABASE}"')
    finally:
        await connection.close()


async def _check_reusable(dsn: str) -> None:
    """Refuse a database holding other messages, or served by a daemon: the demo's daemon would
    send those to its simulator, or that daemon would send the demo's to Meta."""
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchval("SELECT to_regclass('outbox_messages')") is None:
            return
        others = await connection.fetchval(
            "SELECT count(*) FROM outbox_messages "
            "WHERE idempotency_key IS NULL OR idempotency_key NOT LIKE $1",
            DEMO_KEYS,
        )
        daemons = 0
        if await connection.fetchval("SELECT to_regclass('outbox_daemons')") is not None:
            daemons = await connection.fetchval(
                "SELECT count(*) FROM outbox_daemons "
                "WHERE heartbeat_at > now() - interval '2 minutes'"
            )
    finally:
        await connection.close()
    unset = "Give it an empty database, or unset OUTBOX_DATABASE_URL for an embedded one"
    if others:
        raise ConfigurationError(
            f"OUTBOX_DATABASE_URL holds {others} message(s) the demo did not write, which its "
            f"daemon would send to the simulator. {unset}"
        )
    if daemons:
        raise ConfigurationError(
            f"a daemon is running on OUTBOX_DATABASE_URL, which would send the demo's messages "
            f"to Meta. {unset}"
        )


async def _closing(settings: Settings, home: Path | None, listing: int) -> None:
    """`outbox list`, run as typed, and how to go on exploring the same database."""
    env = dict(os.environ)
    prefix = ""
    if home is not None:
        env.pop("OUTBOX_DATABASE_URL", None)
        env["OUTBOX_HOME"] = str(home)
        prefix = f"OUTBOX_HOME={_tilde(home)} "
    elif settings.database_url and os.environ.get("OUTBOX_DATABASE_URL") != settings.database_url:
        env["OUTBOX_DATABASE_URL"] = settings.database_url
        prefix = f"OUTBOX_DATABASE_URL='{redact_url(settings.database_url)}' "
    outbox = _command("outbox")
    print(f"\n$ {prefix}{outbox} list", flush=True)
    listing_process = await asyncio.create_subprocess_exec(  # -P: see Stage.start_daemon
        sys.executable, "-P", "-m", "outbox", "list", env=env, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        await listing_process.wait()
    finally:
        if listing_process.returncode is None:
            listing_process.kill()
            await listing_process.wait()
    if home is not None:
        print("\nExplore it further; the embedded PostgreSQL runs while a command needs it:")
        psql = f"{_command('python')} -m outbox.demo psql"
    else:
        print("\nExplore it further:")
        url = asyncpg_dsn(settings.database_url or "")
        psql = "psql " + (
            f"'{redact_url(url)}'"
            if prefix or url != os.environ.get("OUTBOX_DATABASE_URL")
            else '"$OUTBOX_DATABASE_URL"'
        )
    print(f"  {prefix}{outbox} status {listing}    # its parts, wamids and history")
    print(f"  {prefix}{outbox} stats")
    print(f"  {prefix}{psql}")
    print("  then, in psql: TABLE outbox_demo.bookings; TABLE outbox_events;")
    users, password = _dashboard_login(home or settings.home)
    print("\nOr in a browser: the dashboard over the same rows (search 'booking-' or a phone):")
    print(f"  OUTBOX_DASHBOARD_USERS={_tilde(users)} {prefix}{outbox} dashboard")
    print(f"  then open http://127.0.0.1:{DASHBOARD_PORT}/ and log in as {DEMO_USER} / {password}")


DASHBOARD_PORT = 8070  # `outbox dashboard`'s default
DEMO_USER = "demo"


def _dashboard_login(folder: Path) -> tuple[Path, str]:
    """A users file with one support user (unmasked: it is the demo's own data) and a password
    new each run, readable by its owner only."""
    password = secrets.token_urlsafe(9)
    folder.mkdir(parents=True, exist_ok=True)
    users = folder / "demo-dashboard-users"
    users.touch(mode=0o600)
    users.write_text(f"{DEMO_USER}:support:{hash_password(password)}\n", encoding="utf-8")
    return users, password


def _tilde(path: Path) -> str:
    """`path` as typed in a shell: ~/… inside the home directory (the shell expands it)."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except (ValueError, RuntimeError):  # elsewhere, or no home directory at all
        return str(path)


def _command(name: str) -> str:
    """How to run `name` of this environment from here: its bare name when PATH finds this one."""
    path = Path(sys.executable) if name == "python" else Path(sys.executable).parent / name
    if shutil.which(path.name) == str(path):
        return path.name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def psql(arguments: Sequence[str]) -> int:
    """psql on the database the other commands use: OUTBOX_DATABASE_URL, else the embedded one
    under OUTBOX_HOME, started for as long as psql runs."""
    settings = Settings.from_env()
    if settings.database_url:
        command = ["psql", asyncpg_dsn(settings.database_url), *arguments]
        return subprocess.call(command)  # noqa: S603 (the user's own psql, on their URL)
    dsn = embedded.start(settings.home)
    try:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is psql's to handle
        try:
            psql = embedded.tools() / "psql"
            return subprocess.call([str(psql), dsn, *arguments])  # noqa: S603
        finally:
            signal.signal(signal.SIGINT, interrupt)
    finally:
        embedded.stop(settings.home)
