"""The aiohttp app behind `/webhook`: Meta's verification GET and signed webhook POSTs.

A POST is checked before anything is stored: size (413), signature over the raw bytes (401
missing, 403 wrong), envelope (400). Then the raw body is stored, applied, and answered 200.
`/metrics` serves the receiver's own Prometheus registry (outbox.metrics.receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from outbox.database import create_engine, resolve_dsn, short_error
from outbox.errors import ConfigurationError
from outbox.metrics.exposition import metrics_handler
from outbox.metrics.receiver import ReceiverMetrics
from outbox.settings import Settings
from outbox.webhooks.apply import Applier
from outbox.webhooks.payload import NotAnEnvelope, parse, signature_matches

logger = logging.getLogger("outbox.webhooks")

PATH = "/webhook"
MAX_BODY = 1024 * 1024  # Meta's payloads are a few kilobytes; anything over 1 MiB is refused
SIGNATURE_HEADER = "X-Hub-Signature-256"
COMMAND_TIMEOUT = 10.0


def _required(value: str | None, variable: str, purpose: str) -> str:
    if not value:
        raise ConfigurationError(f"{variable}: required by the webhook receiver ({purpose})")
    return value


def create_app(settings: Settings) -> web.Application:
    """The webhook receiver at `/webhook`, to run alone or mount in an existing aiohttp app.
    Raises ConfigurationError when META_APP_SECRET or META_WEBHOOK_VERIFY_TOKEN is unset."""
    receiver = _Receiver(
        settings,
        app_secret=_required(
            settings.app_secret, "META_APP_SECRET", "it verifies X-Hub-Signature-256"
        ),
        verify_token=_required(
            settings.webhook_verify_token,
            "META_WEBHOOK_VERIFY_TOKEN",
            "it answers Meta's verification request",
        ),
    )
    app = web.Application(client_max_size=MAX_BODY)
    app.cleanup_ctx.append(receiver.lifecycle)
    app.router.add_get(PATH, receiver.verify)
    app.router.add_post(PATH, receiver.receive)
    app.router.add_get("/metrics", metrics_handler(receiver.metrics.registry))
    return app


class _Receiver:
    """The handlers and their state; holds the secrets, so it has no telling repr."""

    def __init__(self, settings: Settings, *, app_secret: str, verify_token: str) -> None:
        self._settings = settings
        self._app_secret = app_secret
        self._token_digest = hashlib.sha256(verify_token.encode()).digest()
        self._applier: Applier | None = None
        self.metrics = ReceiverMetrics()

    def __repr__(self) -> str:
        return "<outbox webhook receiver>"

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """On startup: the database engine and the background re-applier; on cleanup: both
        stopped."""
        engine = create_engine(await resolve_dsn(self._settings), command_timeout=COMMAND_TIMEOUT)
        self._applier = Applier(engine, self.metrics)
        task = asyncio.create_task(self._applier.run(), name="outbox-webhook-reapply")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await engine.dispose()

    async def verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
        query = request.query
        token = query.get("hub.verify_token", "")
        given = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        challenge = query.get("hub.challenge")
        if (
            query.get("hub.mode") == "subscribe"
            and hmac.compare_digest(given, self._token_digest)
            and challenge is not None
        ):
            self.metrics.requests.labels("200").inc()
            return web.Response(text=challenge, content_type="text/plain")
        return self._answer(403, "verification refused")

    async def receive(self, request: web.Request) -> web.Response:
        """A signed webhook: stored as received, then applied; 200 once stored."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return self._answer(413, "body too large")
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            self.metrics.signature_failures.labels("missing").inc()
            return self._answer(401, f"missing {SIGNATURE_HEADER}")
        body = await _read_at_most(request, MAX_BODY)
        if body is None:
            return self._answer(413, "body too large")
        if not signature_matches(self._app_secret, body, header):
            logger.warning("webhook refused: %s does not match the body", SIGNATURE_HEADER)
            self.metrics.signature_failures.labels("invalid").inc()
            return self._answer(403, "invalid signature")
        try:
            envelope = parse(body)
        except NotAnEnvelope as exc:
            logger.warning("webhook refused: not a WhatsApp webhook (%s)", exc)
            return self._answer(400, f"not a WhatsApp webhook: {exc}")
        assert self._applier is not None, "the app was not started"
        try:
            await self._applier.receive(body, envelope)
        except Exception as exc:
            logger.error("webhook not stored (%s); Meta will send it again", short_error(exc))
            return self._answer(503, "cannot store the webhook now")
        return self._answer(200, "ok")

    def _answer(self, status: int, text: str) -> web.Response:
        self.metrics.requests.labels(str(status)).inc()
        return web.Response(status=status, text=text + "\n", content_type="text/plain")


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is longer than `limit` bytes (a chunked body has no
    Content-Length, and a mounted app gets its parent's client_max_size)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
