"""An asyncpg connection that remembers what its unnamed statements look like.

Without a statement cache (statement_cache_size=0, so that no statement stays prepared on the
server, for PgBouncer's sake) asyncpg runs every statement in two round trips: Parse and
Describe, to learn its parameter and column types, then Parse, Bind and Execute, the server
parsing it twice. Here the description is kept on the client, per connection, so that each
later run is the second round trip alone. The server sees exactly what it saw before (the
unnamed statement, parsed with each execution, within one Sync): nothing stays prepared on it.
"""

from __future__ import annotations

from typing import Any, cast

import asyncpg

MAX_DESCRIBED = 256  # distinct statements kept per connection; beyond, the memory starts over


class DescribedConnection(asyncpg.Connection):
    """asyncpg's Connection, keeping its unnamed statements' descriptions (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._described: dict[tuple[str, Any, bool], Any] = {}

    async def _get_statement(
        self,
        query: str,
        timeout: float | None,  # noqa: ASYNC109 (asyncpg's own signature)
        **options: Any,
    ) -> Any:
        parent = cast(Any, super())  # its private methods, which the stubs do not show
        # Anything this asyncpg does not have as 0.32 has it: asyncpg's own behaviour, unchanged.
        remembered = (
            options.get("use_cache", True)
            and not options.get("named", False)
            and getattr(self, "_stmt_cache_enabled", True) is False
        )
        key = (query, options.get("record_class"), bool(options.get("ignore_custom_codec")))
        if remembered:
            statement = self._described.get(key)
            if statement is not None and not getattr(statement, "closed", True):
                return statement
        statement = await parent._get_statement(query, timeout, **options)
        # Only an unnamed statement asyncpg marked to be parsed again with each run.
        unprepared = getattr(statement, "prepared", True) is False
        if remembered and getattr(statement, "name", None) == "" and unprepared:
            if len(self._described) >= MAX_DESCRIBED:
                self._described.clear()
            self._described[key] = statement
        return statement

    def _drop_local_statement_cache(self) -> None:
        """asyncpg forgets its statements (a type or the schema changed): these go too."""
        self._described.clear()
        cast(Any, super())._drop_local_statement_cache()
