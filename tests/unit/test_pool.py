"""The daemon's pool at exit: whatever the database does then, closing it never raises."""

from __future__ import annotations

from typing import Any

from outbox.pool import Pool


class ResetPool:
    """An asyncpg pool whose server resets the connections as they are closed (a restart)."""

    def __init__(self) -> None:
        self.terminated = False

    async def close(self) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    def terminate(self) -> None:
        self.terminated = True


async def test_closing_while_the_database_resets_its_connections_drops_them_quietly() -> None:
    pool = Pool("postgresql://nobody@127.0.0.1:1/none")
    reset: Any = ResetPool()
    pool._pool = reset
    await pool.close(1.0)
    assert reset.terminated
