"""One part's request: a rate slot, the lease checked last, the request itself (with quick
retries of transient failures), and its outcome appended to the row's history and the metrics.

A send in doubt is never retried here: only the row's outcome decides to send it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from outbox.callbacks import callback_data
from outbox.delivery.claim import Claim
from outbox.delivery.events import Event, EventLog
from outbox.delivery.lease import Leases
from outbox.delivery.lines import named, part_fields
from outbox.delivery.pace import InFlightTarget
from outbox.delivery.rate import SharedRate
from outbox.errors import GraphError, SendError
from outbox.media.ids import MediaIds, refuses_media_id
from outbox.metrics.daemon import DaemonMetrics
from outbox.retry import ErrorClass, classify
from outbox.settings import Settings
from outbox.whatsapp import Part
from outbox.whatsapp_client import CloudAPI

logger = logging.getLogger("outbox.daemon")
QUICK_RETRY_CAP = 5.0  # seconds: the longest wait before a quick retry


class LeaseLost(Exception):
    """Another daemon holds the row now: this one sends nothing more of it."""


class Expired(Exception):
    """The row's deadline passed while its request waited (a rate slot, the lease): nothing of
    it may be sent any more."""


class Requests:
    """Sends parts to the Cloud API; a media part by the id of its upload when `media` is given
    (None: by link)."""

    def __init__(
        self,
        settings: Settings,
        api: CloudAPI,
        rate: SharedRate,
        leases: Leases,
        events: EventLog,
        metrics: DaemonMetrics,
        pace: InFlightTarget,
        *,
        installation: str,
        media: MediaIds | None,
    ) -> None:
        self._api = api
        self._rate = rate
        self._leases = leases
        self._events = events
        self._metrics = metrics
        self._pace = pace
        self._installation = installation  # goes into every send's callback data
        self._media = media
        self._quick_retries = settings.quick_retries
        self._quick_retry_delay = settings.quick_retry_delay

    async def _send(self, claim: Claim, recipient: str, part: Part, index: int) -> str:
        """The request, retried quickly (in process, a jittered exponential delay of at most
        QUICK_RETRY_CAP) after a transient failure: those retries belong to one attempt. A send
        in doubt is never among them."""
        tries = 0
        while True:
            try:
                return await self._send_once(claim, recipient, part, index)
            except SendError as error:
                tries += 1
                if tries >= self._quick_retries or classify(error) is not ErrorClass.TRANSIENT:
                    raise
                doubled = 2.0 ** min(tries - 1, 32)  # far past the cap, never an overflow
                ceiling = min(self._quick_retry_delay * doubled, QUICK_RETRY_CAP)
                wait = random.uniform(0, ceiling)  # noqa: S311 (full jitter, as backoff's default)
                self._log_quick_retry(claim, index, error, tries, wait)
                await asyncio.sleep(wait)

    @staticmethod
    def _log_quick_retry(
        claim: Claim, index: int, error: SendError, tries: int, wait: float
    ) -> None:
        """One line per quick retry of a request."""
        code = error.code if isinstance(error, GraphError) else None
        logger.info(
            "%s: part %d: %s; quick retry %d in %.1fs",
            named(claim),
            index + 1,
            error,
            tries,
            wait,
            extra={**part_fields(index, None), "code": code, "delay": round(wait, 3)},
        )

    async def send(self, claim: Claim, recipient: str, part: Part, index: int) -> str:
        """Send one part; a media part by the id of its upload when uploads are on, uploaded
        once more if Meta refuses the id it was given (expired or deleted)."""
        if self._media is None or part.url is None:
            return await self._send(claim, recipient, part, index)
        by_id = await self._media.prepared(part, claim.sender)
        try:
            return await self._send(claim, recipient, by_id, index)
        except SendError as error:
            if not refuses_media_id(error):
                raise
            assert by_id.media_id is not None
            logger.info(
                "%s: part %d: Meta refused media %s (%s); uploading it again",
                named(claim),
                index + 1,
                by_id.media_id,
                error,
            )
            await self._media.forget(by_id.media_id, part.type)
            again = await self._media.prepared(part, claim.sender, refused=by_id.media_id)
            return await self._send(claim, recipient, again, index)

    async def _send_once(self, claim: Claim, recipient: str, part: Part, index: int) -> str:
        """One request, its outcome appended to the row's history and to the metrics."""
        callback = callback_data(self._installation, claim.id, index)
        sender = claim.sender
        # Every request, retries too, takes a slot; a row with a deadline waits no longer.
        if claim.deadline is None:
            await self._rate.acquire(sender)
        else:
            deadline = asyncio.timeout_at(claim.deadline)
            try:
                async with deadline:
                    await self._rate.acquire(sender)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise Expired from None
        # Last, after every wait (a slot, pacing, a database away): the lease must outlast the
        # request, or another daemon may have taken the row over and sent this part; and the
        # deadline must not have passed meanwhile.
        if not await self._leases.holds(claim, recheck=claim.requests > 0):
            raise LeaseLost
        if claim.deadline is not None and asyncio.get_running_loop().time() >= claim.deadline:
            raise Expired
        claim.requests += 1
        started = time.perf_counter()
        try:
            wamid = await self._api.send(recipient, part, callback, sender)
        except SendError as error:
            seconds = time.perf_counter() - started
            self._pace.observe(seconds)
            error_class = classify(error).value
            self._metrics.requested(seconds, error, error_class)
            self._events.record(
                Event(
                    claim.id,
                    index,
                    error_class,
                    http_status=error.http_status,
                    error_code=error.code if isinstance(error, GraphError) else None,
                    detail=str(error),
                    latency_ms=seconds * 1000,
                )
            )
            raise
        seconds = time.perf_counter() - started
        self._pace.observe(seconds)
        self._metrics.requested(seconds, None)
        self._metrics.accepted(part.type)
        self._events.record(
            Event(claim.id, index, "accepted", 200, detail=wamid, latency_ms=seconds * 1000)
        )
        return wamid
