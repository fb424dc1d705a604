"""The application side of a round: rows inserted in committed transactions (and a few rolled
back), one transaction after the other, so that per recipient the id order is the commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

IMAGE = "https://cdn.example.com/room.jpg"
DOCUMENT = "https://cdn.example.com/invoice.pdf"
INSERT = """
    INSERT INTO outbox_messages (recipient, message, media)
    SELECT r, m, md::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS t(r, m, md)
    RETURNING id, jsonb_array_length(media) + (coalesce(message, '') <> '')::int AS parts
"""


def recipients(count: int) -> list[str]:
    return [f"92300{i:07d}" for i in range(1, count + 1)]


@dataclass
class Load:
    """Inserts rows and remembers which ids were committed (and their parts) or rolled back."""

    database_url: str
    rng: random.Random
    to: list[str]
    committed: dict[int, int] = field(default_factory=dict)  # row id -> number of parts
    rolled_back: set[int] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def parts(self) -> int:
        return sum(self.committed.values())

    async def fill(self, rows: int) -> None:
        """A backlog, committed at once."""
        await self._insert(rows, commit=True)

    async def produce(self, rows: int, seconds: float, batch: int = 10) -> None:
        """`rows` more, in transactions of about `batch` rows spread over `seconds`; about one
        transaction in ten is rolled back (its rows must never be sent)."""
        transactions = max(1, rows // batch)
        for _ in range(transactions):
            async with self._lock:
                await self._insert(batch, commit=True)
                if self.rng.random() < 0.1:
                    await self._insert(batch, commit=False)
            await asyncio.sleep(seconds / transactions)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No insert runs inside this block (while the database is away, say)."""
        async with self._lock:
            yield

    def _row(self) -> tuple[str, str | None, str]:
        media = [
            {"type": kind, "url": IMAGE if kind == "image" else DOCUMENT}
            for kind in self.rng.choices(["image", "document"], k=self.rng.choice([0, 0, 1, 1, 2]))
        ]
        text = None if media and self.rng.random() < 0.2 else f"message {self.rng.random():.6f}"
        return self.rng.choice(self.to), text, json.dumps(media)

    async def _insert(self, rows: int, *, commit: bool) -> None:
        values = [self._row() for _ in range(rows)]
        conn = await asyncpg.connect(self.database_url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            inserted = await conn.fetch(
                INSERT, [v[0] for v in values], [v[1] for v in values], [v[2] for v in values]
            )
            if commit:
                await transaction.commit()
            else:
                await transaction.rollback()
        finally:
            await conn.close()
        if not commit:
            self.rolled_back.update(row["id"] for row in inserted)
            return
        self.committed.update((row["id"], row["parts"]) for row in inserted)
