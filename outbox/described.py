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
        *,
        named: Any = False,
        use_cache: bool = True,
        ignore_custom_codec: bool = False,
        record_class: Any = None,
    ) -> Any:
        parent = cast(Any, super())  # its private methods, which the stubs do not show
        remembered = use_cache and not named and not cast(Any, self)._stmt_cache_enabled
        key = (query, record_class, ignore_custom_codec)
        if remembered:
            statement = self._described.get(key)
            if statement is not None and not statement.closed:
                return statement
        statement = await parent._get_statement(
            query,
            timeout,
            named=named,
            use_cache=use_cache,
            ignore_custom_codec=ignore_custom_codec,
            record_class=record_class,
        )
        # Only an unnamed statement asyncpg marked to be parsed again with each run.
        if remembered and not statement.name and not statement.prepared:
            if len(self._described) >= MAX_DESCRIBED:
                self._described.clear()
            self._described[key] = statement
        return statement

    def _drop_local_statement_cache(self) -> None:
        """asyncpg forgets its statements (a type or the schema changed): these go too."""
        self._described.clear()
        cast(Any, super())._drop_local_statement_cache()
