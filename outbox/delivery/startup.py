"""Before the first claim: the credentials are set, the schema is at head, the Graph API's host
can be connected to. A database restarting as the daemon starts is waited out (STARTUP_WAIT), a
Graph API host starting beside it too (API_STARTUP_WAIT); past that, the reason is raised."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from outbox import migrate
from outbox.database import is_connection_error, short_error
from outbox.delivery import reach
from outbox.delivery.report import Condition
from outbox.errors import ConfigurationError
from outbox.pool import Pool
from outbox.retry import expo_delays
from outbox.settings import DEFAULT_GRAPH_API_URL, Settings, redact_url
from outbox.store import revision

logger = logging.getLogger("outbox.daemon")
STATEMENT_TIMEOUT = 60.0  # a statement that takes longer is on a dead connection
# A database restarting or failing over as the daemon starts is waited out this long; past it
# (a wrong host or port, a server that is not coming) `outbox run` exits with the reason.
STARTUP_WAIT = 120.0
# A Graph API host refusing connections at startup is given this long (a local simulator or a
# proxy starting beside the daemon); past it, `outbox run` exits naming META_GRAPH_API_URL. A
# name that does not resolve is refused at once.
API_STARTUP_WAIT = 10.0


class StartupChecks:
    """The checks `run()` makes before it claims; each wait ends (False) when `stopping` is
    set. A database that cannot answer is what `condition` reports meanwhile."""

    def __init__(self, settings: Settings, stopping: asyncio.Event, condition: Condition) -> None:
        self._settings = settings
        self._stopping = stopping
        self._condition = condition

    def credentials(self) -> tuple[str, str]:
        """The access token and phone number id, or a ConfigurationError naming every one
        missing."""
        token, phone = self._settings.access_token, self._settings.phone_number_id
        missing = [
            name
            for name, value in (("META_ACCESS_TOKEN", token), ("META_PHONE_NUMBER_ID", phone))
            if not value
        ]
        if missing:  # every one at once, not one per attempt
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(f"{' and '.join(missing)} {verb} required to send")
        assert token
        assert phone
        return token, phone

    async def _schema_at_head(self, pool: Pool) -> None:
        async with pool.connect() as conn:
            recorded = await revision.recorded_revisions(conn)
        head = migrate.HEAD_REVISION
        if len(recorded) > 1:
            raise ConfigurationError(
                f"the outbox schema records several revisions at once ({', '.join(recorded)} in "
                f"{revision.VERSION_TABLE}), not {head} alone: keep the one it is at, then run "
                "`outbox migrate`"
            )
        current = recorded[0] if recorded else None
        if current != head:
            raise ConfigurationError(
                f"the outbox schema is at revision {current or 'none'}, not {head}: "
                "run `outbox migrate` first"
            )

    async def schema(self, pool: Pool) -> bool:
        """The schema check on the daemon's own pool, waiting out a database that cannot answer
        yet (shutting down, starting up, in recovery, refusing connections) for STARTUP_WAIT at
        most; False when stop() came meanwhile. Any other error, or one that outlasts the wait,
        is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_WAIT
        delays = expo_delays(0.5, 5.0)
        while True:
            try:
                await self._schema_at_head(pool)
                self._condition.database_error = None
                return True
            except Exception as exc:
                if not is_connection_error(exc) or loop.time() >= deadline:
                    raise
                self._condition.database_error = short_error(exc)
                delay = min(next(delays), max(0.1, deadline - loop.time()))
                logger.warning(
                    "database unavailable at startup (%s); retrying in %.1fs",
                    self._condition.database_error,
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False

    async def api(self) -> bool:
        """Refuse (ConfigurationError naming META_GRAPH_API_URL) when the Graph API's host
        cannot be connected to at all: at once for a name that does not resolve, after
        API_STARTUP_WAIT for a host that refuses connections. A host that does not answer in
        time is only warned about. False when stop() came meanwhile."""
        url = redact_url(self._settings.graph_api_url)
        try:
            host, port = reach.host_and_port(self._settings.graph_api_url)
        except ValueError as exc:
            raise ConfigurationError(f"META_GRAPH_API_URL: {redact_url(str(exc))}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_STARTUP_WAIT
        first = True
        while True:
            try:
                problem = await reach.refusal(host, port)
            except reach.NotAnswering as exc:
                logger.warning(
                    "the Graph API at %s (META_GRAPH_API_URL) may be unreachable: %s; starting "
                    "anyway, an outage is waited out",
                    url,
                    exc,
                    extra={"url": url},
                )
                return True
            if problem is None:
                return True
            if not problem.resolved or loop.time() >= deadline:
                unset = " (unset: this is its default)" if url == DEFAULT_GRAPH_API_URL else ""
                waited = "" if first else f", for {API_STARTUP_WAIT:.0f}s"
                raise ConfigurationError(
                    f"the Graph API at {url} cannot be reached: {problem.reason}{waited}; check "
                    f"META_GRAPH_API_URL{unset}"
                )
            if first:
                logger.warning(
                    "the Graph API at %s (META_GRAPH_API_URL): %s; trying again for %.0fs",
                    url,
                    problem.reason,
                    API_STARTUP_WAIT,
                    extra={"url": url},
                )
                first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
            if self._stopping.is_set():
                return False
