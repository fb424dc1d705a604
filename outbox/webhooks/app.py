"""The aiohttp app behind `/webhook`: Meta's verification GET and signed webhook POSTs.

A POST is checked before anything is stored: size (413), a body that does not arrive within
BODY_TIMEOUT (408), signature over the raw bytes (401 missing, 403 wrong), envelope (400). Then
the raw body is made durable, in a batch with other requests' bodies (outbox.webhooks.intake),
and answered 200; it is applied in the background (outbox.webhooks.apply). `/metrics` serves the
receiver's own Prometheus registry (outbox.metrics.receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from outbox.cost.rates import configured_rate_card
from outbox.database import resolve_dsn
from outbox.errors import ConfigurationError
from outbox.metrics.exposition import metrics_handler
from outbox.metrics.receiver import ReceiverMetrics
from outbox.pool import Pool
from outbox.settings import Settings, redact_url
from outbox.webhooks.apply import Applier
from outbox.webhooks.intake import Intake, Unavailable
from outbox.webhooks.payload import NotAnEnvelope, parse, signature_matches
from outbox.webhooks.spool import Spool

logger = logging.getLogger("outbox.webhooks")

PATH = "/webhook"
MAX_BODY = 1024 * 1024  # Meta's payloads are a few kilobytes; anything over 1 MiB is refused
SIGNATURE_HEADER = "X-Hub-Signature-256"
COMMAND_TIMEOUT = 10.0
INTAKE_CONNECTIONS = 6  # the writers, the spool's replay, and writes that outlived SPOOL_AFTER
APPLY_CONNECTIONS = 2
BODY_TIMEOUT = 10.0  # seconds for a body to arrive once its headers have
SPOOL_BYTES = 512 * 1024 * 1024  # the spool's bound: past it, 503 (Meta sends again later)
METRICS: web.AppKey[ReceiverMetrics] = web.AppKey("outbox_webhook_metrics", ReceiverMetrics)


class _Default:
    """The spool's default place: a folder per database under OUTBOX_HOME."""

    def __repr__(self) -> str:
        return "OUTBOX_HOME/webhook-spool/<database>"


DEFAULT_SPOOL = _Default()


def _required(settings: Settings) -> tuple[str, str]:
    """The app secret and the verify token; ConfigurationError naming every one that is unset."""
    needed = {
        "META_APP_SECRET": (settings.app_secret, "it verifies X-Hub-Signature-256"),
        "META_WEBHOOK_VERIFY_TOKEN": (
            settings.webhook_verify_token,
            "it answers Meta's verification request",
        ),
    }
    missing = [(name, purpose) for name, (value, purpose) in needed.items() if not value]
    if missing:
        names = " and ".join(name for name, _ in missing)
        purposes = "; ".join(purpose for _, purpose in missing)
        raise ConfigurationError(f"{names}: required by the webhook receiver ({purposes})")
    assert settings.app_secret
    assert settings.webhook_verify_token
    return settings.app_secret, settings.webhook_verify_token


def create_app(
    settings: Settings,
    *,
    spool_dir: Path | _Default | None = DEFAULT_SPOOL,
    spool_bytes: int = SPOOL_BYTES,
) -> web.Application:
    """The webhook receiver at `/webhook`, to run alone or mount in an existing aiohttp app.
    `spool_dir` is where bodies wait while the database cannot take them (None: nowhere, answer
    503 instead). Raises ConfigurationError when META_APP_SECRET or META_WEBHOOK_VERIFY_TOKEN is
    unset, ValueError when spool_bytes is not positive."""
    if spool_bytes <= 0:
        raise ValueError(f"spool_bytes must be positive, not {spool_bytes}")
    app_secret, verify_token = _required(settings)
    receiver = _Receiver(
        settings,
        app_secret=app_secret,
        verify_token=verify_token,
        spool_dir=spool_dir,
        spool_bytes=spool_bytes,
    )
    app = web.Application(client_max_size=MAX_BODY)
    app[METRICS] = receiver.metrics
    app.cleanup_ctx.append(receiver.lifecycle)
    app.router.add_get(PATH, receiver.verify)
    app.router.add_post(PATH, receiver.receive)
    app.router.add_get("/metrics", metrics_handler(receiver.metrics.registry))
    app.router.add_get("/healthz", _alive)
    return app


async def _alive(request: web.Request) -> web.Response:
    """Liveness for a container's health check: the receiver answers. (Whether its database
    takes bodies is another matter: while it does not, they are spooled.)"""
    return web.Response(text="ok\n", content_type="text/plain")


def spool_folder(home: Path, dsn: str) -> Path:
    """The default spool of a database: its bodies must never be replayed into another one. It
    is named by the database's user, address and name, not by connection options (adding
    `?application_name=` must not orphan what was spooled)."""
    parts = urlsplit(redact_url(dsn))
    host = parts.hostname or ",".join(parse_qs(parts.query).get("host", []))  # or a socket
    identity = f"{parts.username}@{host}:{parts.port or 5432}{parts.path}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return home / "webhook-spool" / digest


def _warn_of_other_spools(ours: Path) -> None:
    """Say so when another database address left spooled bodies beside ours (after a failover
    to a new host, they may be this database's: a person must move them)."""
    with contextlib.suppress(OSError):
        for folder in ours.parent.iterdir():
            if folder != ours and any(folder.glob("*.spool")):
                logger.warning(
                    "%s holds spooled webhooks of another database address; if it is this "
                    "database under its old address, move its *.spool files into %s",
                    folder,
                    ours,
                )


class _Receiver:
    """The handlers and their state; holds the secrets, so it has no telling repr."""

    def __init__(
        self,
        settings: Settings,
        *,
        app_secret: str,
        verify_token: str,
        spool_dir: Path | _Default | None,
        spool_bytes: int,
    ) -> None:
        self._settings = settings
        self._app_secret = app_secret
        self._token_digest = hashlib.sha256(verify_token.encode()).digest()
        self._spool_dir = spool_dir
        self._spool_bytes = spool_bytes
        self._intake: Intake | None = None
        self.metrics = ReceiverMetrics()

    def __repr__(self) -> str:
        return "<outbox webhook receiver>"

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """On startup: the connection pools, the spool, the intake and the applier; on cleanup:
        all stopped (after the server has answered the requests in flight)."""
        dsn = await resolve_dsn(self._settings)
        pool = Pool(
            dsn,
            size=INTAKE_CONNECTIONS,
            command_timeout=COMMAND_TIMEOUT,
            application_name="outbox-webhook",
        )
        applying = Pool(
            dsn,
            size=APPLY_CONNECTIONS,
            command_timeout=COMMAND_TIMEOUT,
            application_name="outbox-webhook",
        )
        spool = self._open_spool(dsn)
        applier = Applier(
            applying,
            self.metrics,
            keywords=self._settings.optout_keywords,
            rate_card=configured_rate_card(),
        )
        self._intake = Intake(pool, spool, self.metrics, on_stored=applier.wake)
        tasks = [
            asyncio.create_task(self._intake.run(), name="outbox-webhook-intake"),
            asyncio.create_task(applier.run(), name="outbox-webhook-apply"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await pool.close(COMMAND_TIMEOUT)
            await applying.close(COMMAND_TIMEOUT)
            if spool is not None:
                spool.close()
                if isinstance(self._spool_dir, _Default):
                    with contextlib.suppress(OSError):  # the folder of all databases' spools
                        spool.directory.parent.rmdir()

    def _open_spool(self, dsn: str) -> Spool | None:
        if self._spool_dir is None:
            return None
        directory = (
            spool_folder(self._settings.home, dsn)
            if isinstance(self._spool_dir, _Default)
            else self._spool_dir
        )
        spool = Spool(directory, self._spool_bytes)
        if isinstance(self._spool_dir, _Default):
            _warn_of_other_spools(directory)
        try:
            spool.open()
        except OSError as exc:
            logger.warning(
                "no webhook spool (%s): while the database is away, webhooks are answered 503",
                exc,
            )
            return None
        return spool

    async def verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
        query = request.query
        token = query.get("hub.verify_token", "")
        given = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        challenge = query.get("hub.challenge")
        if query.get("hub.mode") != "subscribe":
            why = "hub.mode is not subscribe"
        elif not hmac.compare_digest(given, self._token_digest):
            why = "wrong hub.verify_token"  # never the token given: it may be a near miss
        elif challenge is None:
            why = "no hub.challenge"
        else:
            logger.info("verification answered: the verify token matches")
            self.metrics.requests.labels("200").inc()
            return web.Response(text=challenge, content_type="text/plain")
        return self._refuse(request, 403, "verification refused", why)

    async def receive(self, request: web.Request) -> web.Response:
        """A signed webhook: 200 once durable as received (committed or spooled); applied
        later, in the background."""
        too_large = f"body too large (over {MAX_BODY} bytes)"
        if request.content_length is not None and request.content_length > MAX_BODY:
            return self._refuse(request, 413, "body too large", too_large)
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            self.metrics.signature_failures.labels("missing").inc()
            missing = f"missing {SIGNATURE_HEADER}"
            return self._refuse(request, 401, missing, missing)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await _read_at_most(request, MAX_BODY)
        except TimeoutError:
            late = "the body did not arrive in time"
            return self._refuse(request, 408, late, f"{late} ({BODY_TIMEOUT:.0f}s)", close=True)
        if body is None:
            return self._refuse(request, 413, "body too large", too_large)
        if not signature_matches(self._app_secret, body, header):
            self.metrics.signature_failures.labels("invalid").inc()
            why = f"{SIGNATURE_HEADER} does not match the body"
            return self._refuse(request, 403, "invalid signature", why)
        try:
            parse(body)
        except NotAnEnvelope as exc:
            why = f"not a WhatsApp webhook: {exc}"
            return self._refuse(request, 400, why, why)
        assert self._intake is not None, "the app was not started"
        try:
            await self._intake.submit(body)
        except Unavailable:
            return self._answer(503, "cannot store the webhook now")
        return self._answer(200, "ok")

    def _refuse(
        self, request: web.Request, status: int, text: str, why: str, *, close: bool = False
    ) -> web.Response:
        """Answer `status` with `text`, logging the refusal and `why` (one WARNING line)."""
        logger.warning(
            "webhook %s %s from %s refused with %d: %s",
            request.method,
            request.path,
            request.remote or "?",
            status,
            why,
            extra={"status": status, "reason": why, "remote": request.remote},
        )
        return self._answer(status, text, close=close)

    def _answer(self, status: int, text: str, *, close: bool = False) -> web.Response:
        self.metrics.requests.labels(str(status)).inc()
        response = web.Response(status=status, text=text + "\n", content_type="text/plain")
        if close:
            response.force_close()
        return response


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
