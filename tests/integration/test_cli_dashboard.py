"""`outbox dashboard` as typed: it serves the login page until SIGTERM, refuses to start without
users, and `--hash-password` prints a hash the users file takes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import bcrypt

from tests.dashboard_helpers import users

BIN = Path(sys.executable).parent


def _environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
    env.update(variables)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_hash_password_reads_a_pipe_and_prints_a_bcrypt_hash() -> None:
    done = subprocess.run(
        [str(BIN / "outbox"), "dashboard", "--hash-password"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=_environment(),
    )
    assert done.returncode == 0, done.stderr
    assert bcrypt.checkpw(b"s3cret", done.stdout.strip().encode())


def test_without_users_it_exits_1_naming_the_variable(database_url: str) -> None:
    done = subprocess.run(
        [str(BIN / "outbox"), "dashboard", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env=_environment(OUTBOX_DATABASE_URL=database_url),
    )
    assert done.returncode == 1
    assert "OUTBOX_DASHBOARD_USERS" in done.stderr


def test_it_serves_the_login_page_until_sigterm(database_url: str, tmp_path: Path) -> None:
    users_file = tmp_path / "users"
    users_file.write_text(
        "".join(f"{u.name}:{u.role}:{u.password_hash.decode()}\n" for u in users().values())
    )
    port = _free_port()
    served = subprocess.Popen(
        [str(BIN / "outbox"), "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(OUTBOX_DATABASE_URL=database_url, OUTBOX_DASHBOARD_USERS=str(users_file)),
    )
    try:
        assert served.stdout is not None
        line = served.stdout.readline()
        assert line == f"dashboard listening on http://127.0.0.1:{port}/\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as page:
            assert page.status == 200
            assert "Log in" in page.read().decode()
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=15) == 0
    finally:
        if served.poll() is None:
            served.kill()
            served.wait()
        for stream in (served.stdout, served.stderr):
            if stream is not None:
                stream.close()
