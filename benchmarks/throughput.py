"""Throughput: drain a backlog of one-part rows as fast as the daemon can, beside the bare
reference loop (benchmarks/reference.py) on an identical table, in one run.

The simulator runs in its own process (`outbox simulator`); each drain starts from the same
freshly inserted backlog in a scratch database. Prints messages/s, our share of the reference,
and the daemon's CPU-seconds per 1,000 messages (user + system of its processes). `--rate` is
raised far above Meta's 80 mps so the figures show the software, not the limit.

    python -m benchmarks.throughput [--rows 20000] [--latencies 0 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.scratch import scratch_database

BIN = Path(sys.executable).parent
TOKEN, PHONE = "bench-token", "1234567890"
IN_FLIGHT = {0.0: 64, 100.0: 1000}  # the in-flight at each latency
INSERT = (
    "INSERT INTO outbox_messages (recipient, message) "
    "SELECT '92300' || lpad((i % 5000)::text, 7, '0'), 'Booking ' || i || ' confirmed' "
    "FROM generate_series(1, $1) AS i"
)


@dataclass
class Drain:
    seconds: float
    cpu: float  # CPU-seconds of the drainer's processes
    sent: int

    def rate(self) -> float:
        return self.sent / self.seconds

    def cpu_per_1000(self) -> float:
        return self.cpu / self.sent * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environ(dsn: str, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OUTBOX_DATABASE_URL": dsn,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": url,
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def fresh_backlog(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE outbox_messages RESTART IDENTITY CASCADE")
        await conn.execute(INSERT, rows)
        await conn.execute("VACUUM ANALYZE outbox_messages")
    finally:
        await conn.close()


async def count_sent(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM outbox_messages WHERE status = 'sent'")
        )
    finally:
        await conn.close()


async def timed(dsn: str, commands: list[list[str]], env: dict[str, str]) -> Drain:
    """Run the drainers at once from a fresh backlog; time until every one has exited."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    processes = [
        await asyncio.create_subprocess_exec(*command, env=env, stderr=subprocess.DEVNULL)
        for command in commands
    ]
    codes = [await process.wait() for process in processes]
    seconds = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a drainer exited with {codes}: {commands[0]}")
    return Drain(seconds, children_cpu() - cpu_before, await count_sent(dsn))


async def measure(dsn: str, url: str, rows: int, latency: float) -> list[str]:
    in_flight = IN_FLIGHT.get(latency, 64)
    env = environ(dsn, url)
    daemon = [
        str(BIN / "outbox"),
        "run",
        "--drain",
        "--rate",
        "1000000",
        "--concurrency",
        str(in_flight),
        "--poll-interval",
        "1",
    ]
    reference = [sys.executable, "-m", "benchmarks.reference", dsn, url, str(in_flight)]
    results = {}
    for name, commands in (
        ("reference loop", [reference]),
        ("outbox run --drain", [daemon]),
        ("outbox run --drain x2", [daemon, daemon]),
    ):
        await fresh_backlog(dsn, rows)
        results[name] = await timed(dsn, commands, env)
    base = results["reference loop"].rate()
    return [
        f"| {name} | {latency:.0f} ms | {in_flight} | {drain.sent} | {drain.rate():,.0f} | "
        f"{drain.rate() / base:.2f} | {drain.cpu_per_1000():.2f} |"
        for name, drain in results.items()
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 100.0])
    args = parser.parse_args()

    async with scratch_database() as (dsn, version):
        print(f"PostgreSQL {version}, {os.cpu_count()} cores, {args.rows} one-part rows")
        print(
            "| drainer | API latency | in flight | sent | msg/s | share of reference | "
            "CPU-s per 1,000 |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for latency in args.latencies:
            port = free_port()
            simulator = await asyncio.create_subprocess_exec(
                *[
                    str(BIN / "outbox"),
                    "simulator",
                    "--port",
                    str(port),
                    "--latency-ms",
                    str(latency),
                ],
                env={**os.environ, "META_ACCESS_TOKEN": TOKEN, "META_PHONE_NUMBER_ID": PHONE},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await wait_for_port(port)
                for line in await measure(dsn, f"http://127.0.0.1:{port}", args.rows, latency):
                    print(line, flush=True)
            finally:
                simulator.terminate()
                await simulator.wait()


async def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise SystemExit(f"the simulator did not listen on {port}")


if __name__ == "__main__":
    asyncio.run(main())
