"""Delivery figures: drain rate, enqueue-to-request latency, and duplicates after a SIGKILL.

Prints figures, never pass/fail. The daemon runs as its own process (`outbox run`) against the
in-process simulator, in a scratch database created on the server named by OUTBOX_DATABASE_URL
(else the embedded one) and dropped afterwards. `--rate` is raised far above Meta's 80 mps so the
figures show the daemon's own capacity.

    python -m benchmarks.daemon [--rows 10000] [--latencies 0 100] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg

import outbox
from benchmarks.scratch import scratch_database
from outbox.simulator import Simulator, serve

OUTBOX = str(Path(sys.executable).parent / "outbox")
TOKEN, PHONE = "bench-token", "1234567890"
INSERT_BACKLOG = (
    "INSERT INTO outbox_messages (recipient, message, media) "
    "SELECT '92300' || lpad((i % 1000)::text, 7, '0'), 'Booking ' || i || ' confirmed', "
    'CASE WHEN $2 THEN \'[{"type": "image", "url": "https://cdn.example.com/a.jpg"}]\' '
    "ELSE '[]' END::jsonb FROM generate_series(1, $1) AS i"
)


def daemon(dsn: str, url: str, *args: str) -> list[str]:
    return [OUTBOX, "run", "--rate", "100000", "--poll-interval", "1", *args]


def environ(dsn: str, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OUTBOX_DATABASE_URL": dsn,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": url,
        "OUTBOX_MEDIA_MODE": "link",  # cdn.example.com does not exist; the simulator takes links
    }


async def prepare(dsn: str, sim: Simulator, latency_ms: float, rows: int, media: bool) -> None:
    """An empty simulator at `latency_ms`, and a backlog of `rows` (image + text with media)."""
    sim.accepted.clear()
    sim.latency_ms = latency_ms
    conn = await asyncpg.connect(dsn)
    await conn.execute("TRUNCATE outbox_messages CASCADE")
    if rows:
        await conn.execute(INSERT_BACKLOG, rows, media)
    await conn.close()


async def drain_rate(dsn: str, sim: Simulator, url: str, rows: int, latency_ms: float) -> str:
    await prepare(dsn, sim, latency_ms, rows, media=False)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *daemon(dsn, url, "--drain"), env=environ(dsn, url), stderr=subprocess.DEVNULL
    )
    await process.wait()
    elapsed = time.perf_counter() - started
    sends = [a["at"] for a in sim.accepted]
    sending = max(sends) - min(sends) if len(sends) > 1 else float("nan")
    return (
        f"  latency {latency_ms:>4.0f} ms: {rows} messages in {elapsed:.1f}s with start-up = "
        f"{rows / elapsed:.0f} msg/s; {len(sends) / sending:.0f} msg/s while sending"
    )


async def enqueue_latency(dsn: str, sim: Simulator, url: str, samples: int) -> str:
    await prepare(dsn, sim, 0, 0, media=False)
    process = await asyncio.create_subprocess_exec(
        *daemon(dsn, url), env=environ(dsn, url), stderr=subprocess.DEVNULL
    )
    await asyncio.sleep(2)  # let it start and go idle
    conn = await asyncpg.connect(dsn)
    delays = []
    try:
        for i in range(samples):
            async with conn.transaction():
                await outbox.enqueue(conn, f"92300{i:07d}", f"latency probe {i}")
            committed = time.time()
            await sim.wait_for_accepted(i + 1)
            delays.append((sim.accepted[i]["at"] - committed) * 1000)
            await asyncio.sleep(0.02)  # idle again between samples
    finally:
        await conn.close()
        process.send_signal(signal.SIGTERM)
        await process.wait()
    cuts = statistics.quantiles(delays, n=100)
    return (
        f"  enqueue commit -> first API request, idle daemon: "
        f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms"
    )


async def crash_duplicates(dsn: str, sim: Simulator, url: str, rows: int) -> str:
    await prepare(dsn, sim, 5, rows, media=True)
    victim = await asyncio.create_subprocess_exec(
        *daemon(dsn, url, "--lease-seconds", "2"), env=environ(dsn, url), stderr=subprocess.DEVNULL
    )
    await sim.wait_for_accepted(int(rows * 2 * 0.4))
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    at_kill = len(sim.accepted)
    survivor = await asyncio.create_subprocess_exec(
        *daemon(dsn, url, "--drain"), env=environ(dsn, url), stderr=subprocess.DEVNULL
    )
    await survivor.wait()
    counts = Counter(a["callback"] for a in sim.accepted)
    duplicates = sum(n - 1 for n in counts.values())
    return (
        f"  SIGKILL at {at_kill} of {rows * 2} parts ({rows} rows, image + text, concurrency 64): "
        f"{len(counts)} distinct parts sent, {duplicates} duplicates"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0, 100])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--crash-rows", type=int, default=3000)
    args = parser.parse_args()

    sim = Simulator(access_token=TOKEN, phone_number_id=PHONE)
    runner = await serve(sim, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with scratch_database() as (dsn, version):
            print(f"PostgreSQL {version}, {os.cpu_count()} cores")
            for latency in args.latencies:
                print(await drain_rate(dsn, sim, url, args.rows, latency))
            print(await enqueue_latency(dsn, sim, url, args.samples))
            print(await crash_duplicates(dsn, sim, url, args.crash_rows))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
