"""`import outbox` (for enqueue) loads neither the delivery loop, aiohttp, prometheus_client,
alembic nor SQLAlchemy's ORM and asyncio layers, while `outbox.Daemon` and
`outbox.webhooks.create_app` still resolve on first use; `outbox run` starts without alembic,
SQLAlchemy's ORM and asyncio layers, the simulator or the webhook receiver (each costs CPU at
every start)."""

from __future__ import annotations

import subprocess
import sys

LAYERS = ("alembic", "sqlalchemy.orm", "sqlalchemy.ext.asyncio")
HEAVY = ("outbox.delivery", "aiohttp", "prometheus_client", *LAYERS)
NOT_FOR_RUN = (*LAYERS, "outbox.simulator", "outbox.webhooks", "outbox.dashboard")

SCRIPT = f"""
import sys
import outbox
loaded = [name for name in {HEAVY!r} if name in sys.modules]
assert not loaded, loaded
from outbox import Daemon
assert Daemon.__name__ == "Daemon"
assert callable(outbox.webhooks.create_app)
"""

RUN = f"""
import sys
import outbox.cli, outbox.serve, outbox.delivery.daemon
loaded = [name for name in {NOT_FOR_RUN!r} if name in sys.modules]
assert not loaded, loaded
"""


def _runs(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_import_outbox_loads_no_daemon_aiohttp_prometheus_alembic_or_orm() -> None:
    _runs(SCRIPT)


def test_the_daemons_command_loads_no_alembic_orm_simulator_or_receiver() -> None:
    _runs(RUN)


def test_the_public_functions_type_hints_resolve_at_run_time() -> None:
    """Tools that read them (pydantic, FastAPI, typeguard, autodoc) can, though the SQLAlchemy
    layers the hints name are not loaded by `import outbox`."""
    _runs(
        "import inspect, typing, outbox\n"
        "for name in outbox.__all__:\n"
        "    value = getattr(outbox, name)\n"
        "    if inspect.isfunction(value):\n"
        "        typing.get_type_hints(value)\n"
    )
