"""`--since` in SQL: an absolute time, or an age counted back from the database's now() (never
the client's clock)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def since_condition(column: str) -> str:
    """True for rows whose `column` is at or after :since_at / now() - :since_ago (either null:
    no bound)."""
    return (
        f"(CAST(:since_at AS timestamptz) IS NULL OR {column} >= CAST(:since_at AS timestamptz))"
        f" AND (CAST(:since_ago AS interval) IS NULL"
        f" OR {column} >= now() - CAST(:since_ago AS interval))"
    )


def since_params(since: datetime | timedelta | None) -> dict[str, Any]:
    """The two parameters of since_condition."""
    return {
        "since_at": since if isinstance(since, datetime) else None,
        "since_ago": since if isinstance(since, timedelta) else None,
    }
