"""Apply stored webhook bodies in the background, in batches, off the request path.

The request path only makes the raw body durable (outbox.webhooks.intake); this task takes the
oldest unapplied bodies, many at a time, stores their statuses and inbound messages and applies
the statuses, all in one transaction, woken as soon as bodies are stored. A batch that fails is
applied body by body, each under a savepoint, so one body that always fails is skipped for a
while (backoff) and holds back no other. The task also sweeps rows marked `statuses_waiting`
(statuses came before their part; the daemon applies them when it records the part, this is for a
daemon that stopped first) and gives each new waiting status one second look.
Metrics count what a transaction committed, after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from outbox import store
from outbox.connections import Row
from outbox.cost.pricing import pricing_params
from outbox.cost.rates import RateCard
from outbox.database import is_connection_error, short_error
from outbox.metrics.receiver import ReceiverMetrics
from outbox.policy import catalogue, health
from outbox.policy import receiver as policy
from outbox.policy.consent import DEFAULT_KEYWORDS
from outbox.policy.receiver import keyword_set
from outbox.pool import Pool
from outbox.webhooks.payload import Envelope, parse

logger = logging.getLogger("outbox.webhooks")

RETRY_INTERVAL = 0.5  # seconds between rounds when no body arrives (others' bodies, waiting)
BATCH = 500  # waiting statuses (or marked rows) applied per statement
SETTLE = 2.0  # seconds after which a waiting status gets its second look (see RECHECK_WAITING)
WATERMARK_HORIZON = 60.0  # on start, waiting statuses this recent get their second look
BODIES_PER_BATCH = 200  # stored bodies applied in one transaction
WORKERS = 1  # batches applied at once (more take the database's CPU from the intake)
GATHER = 0.05  # seconds a wake-up waits for more bodies before a batch that is not full
BODIES_PER_ROUND = 50  # bodies applied one by one after a batch failed
LOCK_TIMEOUT = 2.0  # a batch waits this long for a row lock, then is applied body by body
MAX_BACKOFF = 300.0  # longest wait before a body or status that failed is tried again
MAX_PAUSE = 30.0  # longest pause of the background task while the database fails it
MAX_INT32 = 2**31 - 1


class Backoff:
    """Items whose application failed, each skipped for a while (1 s, doubling, at most
    MAX_BACKOFF), so that one that always fails never holds back the others."""

    def __init__(self) -> None:
        self._failures: dict[int, tuple[int, float]] = {}

    def failed(self, item: int) -> float:
        """Record a failure; the seconds `item` is now skipped for."""
        failures = self._failures.get(item, (0, 0.0))[0] + 1
        delay = min(MAX_BACKOFF, 2.0 ** (failures - 1))
        self._failures[item] = (failures, _now() + delay)
        return delay

    def succeeded(self, item: int) -> None:
        self._failures.pop(item, None)

    def skipped(self) -> list[int]:
        now = _now()
        return [item for item, (_, until) in self._failures.items() if until > now]


def _now() -> float:
    return asyncio.get_running_loop().time()


def _int32(value: int | None) -> int | None:
    """An error code that fits the integer column; None for one that does not."""
    return value if value is not None and -MAX_INT32 <= value <= MAX_INT32 else None


def _status_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "wamid": status.wamid,
            "installation": status.installation,
            "row_id": status.row_id,
            "part": status.part,
            "status": status.status,
            "at": status.at,
            "code": _int32(status.error_code),
            "title": status.error_title,
            "recipient": status.recipient,
            **pricing_params(status.pricing, status.recipient),
        }
        for status in envelope.statuses
    ]


def _inbound_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "wamid": message.wamid,
            "phone": message.phone_number_id,
            "customer": message.customer,
            "user_id": message.user_id,
            "type": message.type,
            "at": message.at,
            "code": _int32(message.error_code),
            "title": message.error_title,
        }
        for message in envelope.inbound
    ]


def _error_params(envelope: Envelope) -> list[dict[str, Any]]:
    return [
        {
            "phone": error.phone_number_id,
            "code": _int32(error.code),
            "title": error.title,
            "detail": error.detail,
        }
        for error in envelope.errors
    ]


Contents = tuple[int, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def _merged(rows: list[tuple[int, bytes]]) -> list[Contents]:
    """The contents of consecutive bodies merged, to be stored in one statement each (a round
    trip per body cost as much as applying them): (first body's id, statuses, inbound, reported
    errors). A body
    naming a wamid or a row already in the group starts a new one, so that a message's statuses
    get their ids (the order of its history) as they arrived, as body by body would give them
    (a statement orders its own by wamid and status)."""
    groups: list[Contents] = []
    seen: set[object] = set()
    for webhook_id, body in rows:
        envelope = parse(body)
        statuses, inbound = _status_params(envelope), _inbound_params(envelope)
        named = {status["wamid"] for status in statuses} | {
            ("row", status["row_id"]) for status in statuses if status["row_id"] is not None
        }
        if not groups or named & seen:
            groups.append((webhook_id, [], [], []))
            seen = set()
        groups[-1][1].extend(statuses)
        groups[-1][2].extend(inbound)
        groups[-1][3].extend(_error_params(envelope))
        seen |= named
    return groups


class Applier:
    """Applies stored bodies in batches, and statuses whose part has been recorded since."""

    def __init__(
        self,
        pool: Pool,
        metrics: ReceiverMetrics | None = None,
        *,
        keywords: Iterable[str] = DEFAULT_KEYWORDS,
        rate_card: RateCard | None = None,
    ) -> None:
        self._pool = pool
        self._rate_card = rate_card  # prices the charged parts counted in metrics
        self._keywords = keyword_set(keywords)  # inbound texts that opt out of marketing
        self._bodies = Backoff()
        self._watermark: int | None = None  # statuses up to this id had their second look
        self._metrics = metrics or ReceiverMetrics()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Bodies were stored: apply them now rather than at the next round."""
        self._woken.set()

    async def run(self) -> None:
        """Until cancelled: WORKERS loops applying batches side by side (SKIP LOCKED keeps
        their bodies apart; the database works on two at once)."""
        await asyncio.gather(*(self._work() for _ in range(WORKERS)))

    async def _work(self) -> None:
        """Apply stored bodies batch after batch while there are any, then waiting statuses;
        between rounds, wait for a wake-up (RETRY_INTERVAL at most)."""
        busy, failures, waiting_checked = False, 0, 0.0
        while True:
            if failures:
                await asyncio.sleep(min(MAX_PAUSE, RETRY_INTERVAL * 2**failures))
            elif not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_INTERVAL):
                        await self._woken.wait()
                # Let the bodies of a burst gather: fewer, bigger transactions leave the
                # database to the intake, whose commits the requests wait for.
                await asyncio.sleep(GATHER)
            self._woken.clear()
            try:
                busy = await self._apply_batch()
                if not busy or _now() - waiting_checked >= RETRY_INTERVAL:
                    waiting_checked = _now()
                    busy = await self._sweep_marked_rows() or busy
                    busy = await self._recheck_statuses() or busy
            except Exception as exc:
                failures += 1
                logger.warning(
                    "applying webhooks failed (%s); next try in %.0fs",
                    short_error(exc),
                    min(MAX_PAUSE, RETRY_INTERVAL * 2**failures),
                )
                continue
            if failures:
                logger.info("applying webhooks works again")
                failures = 0

    async def _apply_batch(self) -> bool:
        """Apply up to BODIES_PER_BATCH stored bodies, oldest first, in one transaction; True
        when there may be more. A batch the database refuses is applied body by body."""
        rows: list[tuple[int, bytes]] = []
        try:
            async with self._pool.begin() as conn:
                rows = await store.next_unapplied_webhooks(
                    conn, BODIES_PER_BATCH, self._bodies.skipped()
                )
                if not rows:
                    return False
                await store.set_lock_timeout(conn, LOCK_TIMEOUT)
                ids, duplicates, reported, inbound_count = [], 0, [], 0
                charged: list[tuple[str | None, str, datetime]] = []
                for webhook_id, statuses, inbound, errors in _merged(rows):
                    new = await store.store_contents(
                        conn, webhook_id, statuses, inbound, errors, charged
                    )
                    reported += errors
                    ids += new
                    duplicates += len(statuses) - len(new)
                    inbound_count += len(inbound)
                await store.mark_webhooks_applied(conn, [webhook_id for webhook_id, _ in rows])
                await policy.record(conn, [body for _, body in rows], self._keywords)
                categories = await catalogue.record(conn, [body for _, body in rows])
                await health.record(conn, [body for _, body in rows])
                results = await store.apply_statuses(conn, ids)
        except Exception as exc:
            if is_connection_error(exc) or not rows:
                raise
            logger.warning(
                "a batch of %d webhooks could not be applied (%s); applying them one by one",
                len(rows),
                short_error(exc),
            )
            await self._retry_bodies(len(rows))
            return True
        self._log(results)
        self._log_applied(len(rows), results, duplicates, inbound_count, len(reported))
        self._metrics.bodies.labels("applied").inc(len(rows))
        self._count(results, duplicates=duplicates)
        self._count_reported(reported)
        self._count_charged(charged)
        self._count_categories(categories)
        return len(rows) >= BODIES_PER_BATCH

    async def _apply(
        self,
        conn: asyncpg.Connection,
        webhook_id: int,
        envelope: Envelope,
        charged: list[tuple[str | None, str, datetime]],
    ) -> tuple[int, list[Row]]:
        """Store and apply the body's contents: the number of duplicate statuses (stored
        before), and the outcome of each new one."""
        ids = await store.store_contents(
            conn,
            webhook_id,
            _status_params(envelope),
            _inbound_params(envelope),
            _error_params(envelope),
            charged,
        )
        results = await store.apply_statuses(conn, ids)
        self._log(results)
        return len(envelope.statuses) - len(ids), results

    async def _retry_bodies(self, count: int = BODIES_PER_ROUND) -> bool:
        """Apply up to `count` stored bodies, each in its own transaction; True when there may
        be more."""
        for _ in range(count):
            async with self._pool.begin() as conn:
                found = await store.next_unapplied_webhook(conn, self._bodies.skipped())
                if found is None:
                    return False
                webhook_id, body = found
                charged: list[tuple[str | None, str, datetime]] = []
                try:
                    async with conn.transaction():  # a savepoint
                        # A row another transaction holds makes this body fail and wait its
                        # turn (backoff), not stall every body behind it.
                        await store.set_lock_timeout(conn, LOCK_TIMEOUT)
                        duplicates, results = await self._apply(
                            conn, webhook_id, parse(body), charged
                        )
                        await policy.record(conn, [body], self._keywords)
                        categories = await catalogue.record(conn, [body])
                        await health.record(conn, [body])
                except Exception as exc:
                    if is_connection_error(exc):
                        raise
                    delay = self._bodies.failed(webhook_id)
                    logger.error(
                        "webhook %d could not be applied (%s); next try in %.0fs",
                        webhook_id,
                        short_error(exc),
                        delay,
                    )
                    continue
            self._bodies.succeeded(webhook_id)
            self._metrics.bodies.labels("reapplied").inc()
            self._count(results, duplicates=duplicates)
            envelope = parse(body)
            self._count_reported(_error_params(envelope))
            self._count_charged(charged)
            self._count_categories(categories)
            logger.info("webhook %d applied on retry", webhook_id)
            self._log_applied(1, results, duplicates, len(envelope.inbound), len(envelope.errors))
        return True

    async def _sweep_marked_rows(self) -> bool:
        """Apply what waits for rows marked `statuses_waiting` whose parts are now recorded, and
        unmark the rows nothing waits for any more; True when there may be more. Marked rows are
        few: those whose statuses came before their parts (the daemon applies what waited when
        it records them; this is for a daemon that stopped first)."""
        after, busy = 0, False
        while True:
            async with self._pool.connect() as conn:
                rows = await store.marked_rows(conn, after, BATCH)
            if not rows:
                return busy
            async with self._pool.begin() as conn:
                results = await store.apply_marked(conn, rows)
                await store.unmark_rows(conn, rows)
            self._log(results)
            self._log_waited(results)
            self._count(results, duplicates=None)
            busy = busy or any(r["outcome"] != "waiting" for r in results)
            if len(rows) < BATCH:
                return busy
            after = rows[-1]

    async def _recheck_statuses(self) -> bool:
        """Give the waiting statuses that came since the watermark their one second look (see
        store.RECHECK_WAITING); True when there may be more. A batch the database refuses is
        applied status by status, and a status that still fails is logged and left waiting."""
        async with self._pool.connect() as conn:
            if self._watermark is None:
                self._watermark = await store.waiting_watermark(conn, WATERMARK_HORIZON)
            ids = await store.recheck_waiting(conn, self._watermark, SETTLE, BATCH)
        if not ids:
            return False
        try:
            async with self._pool.begin() as conn:
                results = await store.apply_statuses(conn, ids)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            logger.warning("applying waiting statuses failed (%s); one by one", short_error(exc))
            results = await self._apply_one_by_one(ids)
        self._watermark = max(ids)
        self._log(results)
        self._log_waited(results)
        self._count(results, duplicates=None)
        return len(ids) >= BATCH

    async def _apply_one_by_one(self, ids: list[int]) -> list[Row]:
        applied: list[Row] = []
        for status_id in ids:
            try:
                async with self._pool.begin() as conn:
                    applied.extend(await store.apply_statuses(conn, [status_id]))
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                logger.error(
                    "status %d could not be applied (%s); it waits for its part to be recorded",
                    status_id,
                    short_error(exc),
                )
        return applied

    def _count_charged(self, charged: list[tuple[str | None, str, datetime]]) -> None:
        """Count our parts Meta newly showed charged, and what the rate card says they cost."""
        for country, category, billed_at in charged:
            where = country or "unknown"
            self._metrics.charged_messages.labels(where, category).inc()
            rate = (
                None
                if self._rate_card is None
                else self._rate_card.rate(country, category, billed_at)
            )
            if rate is not None:
                amount = self._metrics.charged_amount.labels(where, category, rate.currency)
                amount.inc(float(rate.price))

    def _count_categories(self, changes: list[Row]) -> None:
        """Count and log the template category changes Meta announced (committed now)."""
        for change in changes:
            old, new = change["old_category"] or "unknown", change["category"] or "unknown"
            self._metrics.template_category_changes.labels(old, new).inc()
            logger.warning(
                "Meta changed the category of template %s (%s) from %s to %s",
                change["name"],
                change["language"],
                old,
                new,
            )

    def _count_reported(self, errors: list[dict[str, Any]]) -> None:
        """Count the errors Meta reported about a number or the app, and log each: they say
        why sending may be failing (130429 throughput, 131000 ...), not about one message."""
        for error in errors:
            code = "unknown" if error["code"] is None else str(error["code"])
            self._metrics.reported_errors.labels(code).inc()
            logger.warning(
                "Meta reported error %s for number %s: %s%s",
                code,
                error["phone"] or "?",
                error["title"] or "(no title)",
                f" ({error['detail']})" if error["detail"] else "",
            )

    def _count(self, results: list[Row], *, duplicates: int | None) -> None:
        """Count committed statuses: applied ones by status (a failed status ignored for a part
        already delivered or read is not); with `duplicates` (statuses received now, not
        re-applied later), every outcome too."""
        for result in results:
            if result["outcome"] == "applied" and not result["ignored"]:
                self._metrics.statuses_applied.labels(result["status"]).inc()
            if duplicates is not None:
                self._metrics.statuses.labels(result["outcome"]).inc()
        if duplicates:
            self._metrics.statuses.labels("duplicate").inc(duplicates)

    @staticmethod
    def _log_applied(
        bodies: int, results: list[Row], duplicates: int, inbound: int, errors: int
    ) -> None:
        """One INFO line per committed batch of bodies: what they applied, in counts (each
        status has its own DEBUG line: at Meta's three statuses per message, an INFO line each
        would outnumber every other line)."""
        outcomes = {"applied": 0, "waiting": 0, "other_copy": 0, "no_row": 0}
        for result in results:
            outcomes[str(result["outcome"])] = outcomes.get(str(result["outcome"]), 0) + 1
        logger.info(
            "%d webhook%s applied: %d statuses applied, %d waiting for their part, %d "
            "duplicates, %d for other copies or pruned rows; %d inbound messages, %d errors "
            "reported by Meta",
            bodies,
            "" if bodies == 1 else "s",
            outcomes["applied"],
            outcomes["waiting"],
            duplicates,
            outcomes["other_copy"] + outcomes["no_row"],
            inbound,
            errors,
            extra={
                "bodies": bodies,
                "applied": outcomes["applied"],
                "waiting": outcomes["waiting"],
                "duplicates": duplicates,
                "unmatched": outcomes["other_copy"] + outcomes["no_row"],
                "inbound": inbound,
                "errors": errors,
            },
        )

    @staticmethod
    def _log_waited(results: list[Row]) -> None:
        """One INFO line when statuses that waited for their part are applied at last."""
        applied = sum(1 for result in results if result["outcome"] == "applied")
        if applied:
            logger.info(
                "%d statuses that waited for their part applied",
                applied,
                extra={"applied": applied},
            )

    def _log(self, results: list[Row]) -> None:
        for result in results:
            if result["ignored"]:
                logger.info(
                    "message %d: failed status for part %d ignored: the part was already "
                    "delivered or read",
                    result["row_id"],
                    result["part"],
                )
            elif result["outcome"] == "waiting":
                logger.debug(
                    "status %s for %s waits for its part", result["status"], result["wamid"]
                )
            else:
                logger.debug(
                    "status %s for %s: %s (message %s, part %s)",
                    result["status"],
                    result["wamid"],
                    result["outcome"],
                    result["row_id"],
                    "?" if result["part"] is None else int(result["part"]) + 1,
                    extra={"row_id": result["row_id"], "wamid": result["wamid"]},
                )
