"""With OUTBOX_DATABASE_URL unset, every command uses one embedded PostgreSQL under OUTBOX_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def outbox(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OUTBOX_DATABASE_URL", "XDG_RUNTIME_DIR")
    }
    env["OUTBOX_HOME"] = str(home)
    return subprocess.run(
        [str(BIN / "outbox"), *argv], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(300)
def test_commands_share_an_embedded_server_whose_data_persists(tmp_path: Path) -> None:
    home = tmp_path / "outbox-home"
    migrated = outbox(home, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stderr == ""
    made = outbox(home, "enqueue", "+92 300 1234567", "from a fresh machine")
    assert made.returncode == 0, made.stderr
    shown = outbox(home, "status", made.stdout.strip())
    assert shown.returncode == 0, shown.stderr
    assert "from a fresh machine" in shown.stdout
    assert (home / "postgres" / "PG_VERSION").is_file()
