"""`outbox demo`: a throwaway embedded PostgreSQL, the simulator, a handful of realistic
messages (one fails for good, one needs retries, one is scheduled), delivered and shown."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

from outbox import embedded, migrate
from outbox.daemon import Daemon
from outbox.database import create_engine
from outbox.enqueue import enqueue
from outbox.settings import Settings
from outbox.simulator import Simulator, Step, serve
from outbox.status import Delivery, list_messages

NOT_ON_WHATSAPP = "447700900123"
FLAKY = "4915112345678"
DEMO_TOKEN = "demo-token"  # noqa: S105 (the local simulator's, not a secret)
PHONE_NUMBER_ID = "100000000000001"


async def _enqueue_samples(dsn: str) -> None:
    engine = create_engine(dsn)
    try:
        async with engine.begin() as conn:
            await enqueue(
                conn,
                "+1 (650) 555-1234",
                "Hi Sara, your stay at Lakeside Cabin is "
                "confirmed for 12-14 Dec. Check-in from 3 pm.",
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
    lines = [f"{'id':>3}  {'recipient':<14} {'parts':<6} {'status':<8} {'tries':>5}  outcome"]
    for d in sorted(deliveries, key=lambda d: d.id):
        done = sum(1 for wamid in d.part_ids if wamid)
        if d.status == "failed":
            outcome = f"error {d.error_code}: {d.last_error}"
        elif d.message_id:
            outcome = d.message_id[:40] + "…"
        else:
            outcome = (
                f"scheduled for {d.next_attempt_at:%Y-%m-%d %H:%M} UTC"
                if d.next_attempt_at
                else "-"
            )
        lines.append(
            f"{d.id:>3}  {d.recipient:<14} {f'{done}/{len(d.part_ids)}':<6} {d.status:<8} "
            f"{d.attempts:>5}  {outcome[:90]}"
        )
    return "\n".join(lines)


async def _demo(dsn: str) -> int:
    simulator = Simulator(access_token=DEMO_TOKEN, phone_number_id=PHONE_NUMBER_ID)
    simulator.scenario = {
        NOT_ON_WHATSAPP: deque([Step.parse({"error": 131026})]),
        FLAKY: deque([Step.parse({"error": 131000, "times": 4})]),
    }
    runner = await serve(simulator, "127.0.0.1", 0)
    try:
        settings = Settings(
            database_url=dsn,
            access_token=DEMO_TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            graph_api_url=f"http://127.0.0.1:{runner.addresses[0][1]}",
            retry_delay=0.5,
            quick_retry_delay=0.05,
            poll_interval=0.5,
        )
        await _enqueue_samples(dsn)
        print("enqueued 6 messages; delivering through the local Graph API simulator…")
        code = await asyncio.wait_for(Daemon(settings, drain=True).run(), 60)
        engine = create_engine(dsn)
        try:
            async with engine.connect() as conn:
                print()
                print(_table(await list_messages(conn)))
        finally:
            await engine.dispose()
        print(f"\n{simulator.requests} API requests, {len(simulator.accepted)} messages accepted")
        return code
    finally:
        await runner.cleanup()


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
