"""Long-running commands: `outbox run` (the daemon, with /metrics, /healthz and /readyz),
`outbox simulator` and `outbox webhook`."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from outbox.delivery.daemon import EXIT_PAUSED, Daemon
from outbox.logs import configure_logging
from outbox.metrics.exposition import metrics_handler
from outbox.settings import Settings


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """asyncio.run(main()), on uvloop's event loop when it is installed (the `fast` extra):
    it costs less CPU per request and per statement than asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# The collector's defaults suit a short script: a pass over the young generation every 700 new
# objects, and now and then over the whole heap, every module imported at start included. A
# daemon makes a few hundred objects a message: ~15% of its CPU went there (PROFILE.md, round 7).
YOUNG_GENERATION = 20_000


def _collect_for_a_long_run() -> None:
    """What a long-running command holds once started (its modules, settings, handlers) lives as
    long as the process: the collector leaves it out of every pass, and collects young objects
    every YOUNG_GENERATION of them. Cycles are still collected; only less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 20, 20)


def _on_signals(stop: Callable[[str], None]) -> None:
    """Call `stop` with the signal's name on SIGTERM and SIGINT."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, f"{signum.name} received")


async def _health_server(daemon: Daemon, host: str, port: int) -> web.AppRunner:
    """`--http-port`: the daemon's /metrics (Prometheus), /healthz and /readyz (JSON)."""

    async def healthz(request: web.Request) -> web.Response:
        """Liveness: the loop is turning (also while paused, held or in an outage)."""
        health = daemon.health()
        return web.json_response(health, status=200 if health["live"] else 503)

    async def readyz(request: web.Request) -> web.Response:
        """Readiness: the database answers and sending is neither paused, held nor down;
        else 503 with the reason."""
        health = daemon.health()
        return web.json_response(health, status=200 if health["ready"] else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(daemon.metrics.registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def run_daemon(
    settings: Settings,
    *,
    drain: bool,
    http_port: int | None,
    http_host: str = "127.0.0.1",
    log_format: str = "text",
    log_level: str = "INFO",
) -> int:
    """`outbox run`: deliver until SIGTERM/SIGINT, or until drained with --drain."""
    configure_logging(settings, fmt=log_format, level=log_level)
    _collect_for_a_long_run()

    async def main() -> int:
        daemon = Daemon(settings, drain=drain, check_api=True)
        _on_signals(daemon.stop)
        runner = await _health_server(daemon, http_host, http_port) if http_port else None
        try:
            code = await daemon.run()
        finally:
            if runner is not None:
                await runner.cleanup()
        if code == EXIT_PAUSED:
            print(
                f"outbox: drain stopped, sending is paused: {daemon.paused_reason}", file=sys.stderr
            )
        return code

    return _run(main)


def run_simulator(
    settings: Settings,
    *,
    host: str,
    port: int,
    latency_ms: float,
    fail_rate: float,
    scenario: Path | None,
    mps: float | None,
    webhook_url: str | None = None,
    status_delay: float = 0.2,
    enforce_window: bool = False,
    log_format: str = "text",
    log_level: str = "INFO",
) -> int:
    """`outbox simulator`: serve the local Graph API until SIGTERM/SIGINT."""
    # Each command imports what only it runs: `outbox run` starts faster without these.
    from outbox.simulator import Simulator, load_scenario, load_sender_scenario, serve
    from outbox.status_webhooks import StatusNotifier

    configure_logging(settings, fmt=log_format, level=log_level)
    notifier = None
    if webhook_url:
        notifier = StatusNotifier(
            webhook_url,
            settings.app_secret,
            settings.phone_number_id or "100000000000001",
            delay=status_delay,
        )
    simulator = Simulator(
        access_token=settings.access_token,
        phone_number_id=settings.phone_number_id,
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        mps=mps,
        pair_burst=settings.pair_burst,
        pair_interval=settings.pair_interval,
        scenario=load_scenario(scenario) if scenario else {},
        sender_scenario=load_sender_scenario(scenario) if scenario else {},
        notifier=notifier,
    )
    simulator.rules.enforce_window = enforce_window
    if notifier is not None:
        simulator.rules.phone_number_id = notifier.phone_number_id

    async def main() -> int:
        stopped = asyncio.Event()
        _on_signals(lambda _: stopped.set())
        runner = await serve(simulator, host, port)
        print(f"simulator listening on http://{host}:{port}", flush=True)
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()
        return 0

    return _run(main)


def run_webhook(
    settings: Settings,
    *,
    host: str,
    port: int,
    log_format: str = "text",
    log_level: str = "INFO",
) -> int:
    """`outbox webhook`: receive Meta's webhooks at /webhook until SIGTERM/SIGINT."""
    from outbox.webhooks import create_app
    from outbox.webhooks import server as webhook_server

    app = create_app(settings)  # a missing secret or token is refused before anything starts
    configure_logging(settings, fmt=log_format, level=log_level)
    _collect_for_a_long_run()

    async def main() -> int:
        stopped = asyncio.Event()
        _on_signals(lambda _: stopped.set())
        served = await webhook_server.serve(app, host, port)
        try:
            print(f"webhook receiver listening on http://{host}:{port}/webhook", flush=True)
            await stopped.wait()
        finally:
            await served.close()
        return 0

    return _run(main)
