"""`outbox demo`: a throwaway embedded PostgreSQL, the simulator, the webhook receiver, and a
handful of realistic messages (a template, one that fails for good, one that needs retries, one
scheduled), delivered, confirmed `delivered` and `read` by signed status webhooks, and shown."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from outbox import embedded, migrate
from outbox.daemon import Daemon
from outbox.database import create_engine
from outbox.enqueue import enqueue
from outbox.settings import Settings
from outbox.simulator import Simulator, Step, serve
from outbox.status import Delivery, list_messages
from outbox.status_webhooks import StatusNotifier
from outbox.templates import Template
from outbox.webhooks import create_app

NOT_ON_WHATSAPP = "447700900123"
FLAKY = "4915112345678"
DEMO_TOKEN = "demo-token"  # noqa: S105 (the local simulator's, not a secret)
PHONE_NUMBER_ID = "100000000000001"
DEMO_APP_SECRET = "demo-app-secret"  # noqa: S105 (signs the simulator's webhooks locally)
DEMO_VERIFY_TOKEN = "demo-verify-token"  # noqa: S105


async def _enqueue_samples(dsn: str) -> None:
    engine = create_engine(dsn)
    try:
        async with engine.begin() as conn:
            await enqueue(
                conn,
                "+1 (650) 555-1234",
                template=Template(
                    "booking_confirmed",
                    "en_US",
                    ("Sara", "Lakeside Cabin", "12-14 Dec"),
                    header_image="https://example.com/cabins/lakeside.jpg",
                ),
            )
            await enqueue(
                conn,
                "+92 300 123 4567",
                "Photos of the 2-bed flat on Canal Road: https://example.com/listings/42",
                media_urls={
                    "images": [
                        "https://example.com/l/42/front.jpg",
                        "https://example.com/l/42/kitchen.jpg",
                    ]
                },
            )
            await enqueue(
                conn,
                "+971 50 123 4567",
                "Your receipt for order #1042.",
                media_urls=[
                    {
                        "type": "document",
                        "url": "https://example.com/r/1042.pdf",
                        "filename": "receipt-1042.pdf",
                    }
                ],
            )
            await enqueue(conn, "+44 7700 900123", "Your parcel is out for delivery.")
            await enqueue(conn, "+49 151 12345678", "Your viewing is booked for Saturday 11:00.")
            await enqueue(
                conn,
                "+1 (650) 555-1234",
                "Reminder: check-in is tomorrow.",
                send_at=datetime.now(UTC) + timedelta(days=1),
            )
    finally:
        await engine.dispose()


def _table(deliveries: list[Delivery]) -> str:
    lines = [f"{'id':>3}  {'recipient':<14} {'parts':<6} {'status':<9} {'tries':>5}  outcome"]
    for d in sorted(deliveries, key=lambda d: d.id):
        done = sum(1 for wamid in d.part_ids if wamid)
        if d.status == "failed":
            outcome = f"error {d.error_code}: {d.last_error}"
        elif d.read_at:
            outcome = f"read at {d.read_at:%H:%M:%S}, {d.message_id}"
        elif d.message_id:
            outcome = d.message_id
        else:
            outcome = (
                f"scheduled for {d.next_attempt_at:%Y-%m-%d %H:%M} UTC"
                if d.next_attempt_at
                else "-"
            )
        lines.append(
            f"{d.id:>3}  {d.recipient:<14} {f'{done}/{len(d.part_ids)}':<6} {d.status:<9} "
            f"{d.attempts:>5}  {outcome[:90]}"
        )
    return "\n".join(lines)


async def _receiver(settings: Settings) -> tuple[web.AppRunner, str]:
    """The webhook receiver on a free port, as `outbox webhook` runs it."""
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"


async def _settled(dsn: str, within: float) -> list[Delivery]:
    """The messages once no accepted one still waits for its receipts (or `within` passed)."""
    engine = create_engine(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            async with engine.connect() as conn:
                deliveries = await list_messages(conn)
            waiting = [d for d in deliveries if d.status in ("sent", "delivered")]
            if not waiting or asyncio.get_running_loop().time() > deadline:
                return deliveries
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def _demo(dsn: str) -> int:
    settings = Settings(
        database_url=dsn,
        access_token=DEMO_TOKEN,
        phone_number_id=PHONE_NUMBER_ID,
        app_secret=DEMO_APP_SECRET,
        webhook_verify_token=DEMO_VERIFY_TOKEN,
        retry_delay=0.5,
        quick_retry_delay=0.05,
        poll_interval=0.5,
    )
    receiver, webhook_url = await _receiver(settings)
    simulator = Simulator(
        access_token=DEMO_TOKEN,
        phone_number_id=PHONE_NUMBER_ID,
        notifier=StatusNotifier(webhook_url, DEMO_APP_SECRET, PHONE_NUMBER_ID, delay=0.3),
    )
    simulator.scenario = {
        NOT_ON_WHATSAPP: deque([Step.parse({"accept": True, "then": "failed", "error": 131026})]),
        FLAKY: deque([Step.parse({"error": 131000, "times": 4})]),
    }
    runner = await serve(simulator, "127.0.0.1", 0)
    try:
        settings = replace(settings, graph_api_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        await _enqueue_samples(dsn)
        print("enqueued 6 messages; delivering through the local Graph API simulator…")
        code = await asyncio.wait_for(Daemon(settings, drain=True).run(), 60)
        print("sent; waiting for Meta's (simulated, signed) status webhooks…")
        deliveries = await _settled(dsn, 15)
        print()
        print(_table(deliveries))
        print(
            f"\n{simulator.requests} API requests, {len(simulator.accepted)} parts accepted, "
            f"{simulator.notifier.posted if simulator.notifier else 0} status webhooks received"
        )
        return code
    finally:
        await runner.cleanup()
        await receiver.cleanup()


def run_demo() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("outbox.daemon").setLevel(logging.ERROR)
    home = Path(tempfile.mkdtemp(prefix="outbox-demo-"))
    print(f"starting a throwaway embedded PostgreSQL in {home}")
    try:
        dsn = embedded.start(home)
        migrate.upgrade(dsn)
        return asyncio.run(_demo(dsn))
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
