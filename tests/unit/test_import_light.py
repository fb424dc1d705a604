"""`import outbox` (for enqueue) loads neither the delivery loop, aiohttp nor prometheus_client,
while `outbox.Daemon` and `outbox.webhooks.create_app` still resolve on first use."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("outbox.delivery", "aiohttp", "prometheus_client")

SCRIPT = f"""
import sys
import outbox
loaded = [name for name in {HEAVY!r} if name in sys.modules]
assert not loaded, loaded
from outbox import Daemon
assert Daemon.__name__ == "Daemon"
assert callable(outbox.webhooks.create_app)
"""


def test_import_outbox_loads_no_daemon_aiohttp_or_prometheus() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
