"""A real PgBouncer in transaction pooling mode, in front of the test server, for one test.

It runs from its own configuration in a temporary directory, on a port of its own, as a child
process that stop() ends. PgBouncer refuses to run as root, so as root it switches to another
user (see _run_as), to whom the directory is handed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

START_TIMEOUT = 10.0


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable: on PATH, or where Debian puts it (/usr/sbin is not on every
    user's PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as(socket_directory: str | None) -> str | None:
    """The user to switch to when running as root (None when not root): the owner of the
    server's socket directory, which only that user may enter (embedded PostgreSQL's), else
    Debian's `postgres` or `nobody`."""
    if os.geteuid() != 0:
        return None
    if socket_directory is not None:
        owner = pwd.getpwuid(os.stat(socket_directory).st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("pgbouncer cannot run as root and there is no postgres or nobody user")


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgBouncer:
    """start(server_dsn) → the same database's URL through PgBouncer; stop() ends it."""

    def __init__(self, binary: str, *, pool_size: int = 4) -> None:
        self._binary = binary
        self._pool_size = pool_size
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._log: Path | None = None
        self.port = 0

    def start(self, server_dsn: str) -> str:
        parts = urlsplit(server_dsn)
        host = parse_qs(parts.query).get("host", [""])[0] or parts.hostname or "127.0.0.1"
        user = parts.username or "postgres"
        target = f"host={_quoted(host)} port={parts.port or 5432} user={_quoted(user)}"
        if parts.password:
            target += f" password={_quoted(parts.password)}"
        self.port = _free_port()
        # /tmp itself, not pytest's tmp_path: the unprivileged user must be able to reach it.
        self._directory = Path(tempfile.mkdtemp(prefix="outbox-pgbouncer-"))
        config = self._directory / "pgbouncer.ini"
        users = self._directory / "userlist.txt"
        self._log = self._directory / "pgbouncer.log"
        users.write_text(f'"{user}" ""\n')
        config.write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self._pool_size}\n"
            "max_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self._log}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        command = [self._binary]
        run_as = _run_as(host if host.startswith("/") else None)
        if run_as is not None:
            command += ["-u", run_as]
            for path in (self._directory, config, users):
                shutil.chown(path, user=run_as)
        command.append(str(config))
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_until_listening()
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}", query=""))

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                _, stderr = self._process.communicate()
                raise RuntimeError(f"pgbouncer exited at once: {stderr.decode()}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        """What PgBouncer logged so far (for assertion messages)."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            # SIGTERM: an immediate shutdown up to PgBouncer 1.22; later ones wait for their
            # clients, hence the SIGKILL after a while.
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
