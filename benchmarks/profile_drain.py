"""Profile one `outbox run --drain` of a backlog of one-part rows: CPU µs per message of the
daemon and of PostgreSQL (as benchmarks/throughput.py counts them), the statements it ran per
message with their time (pg_stat_statements, when the server loads it), the WAL it wrote per
message (records and full-page images too), and with `--py-spy` the daemon's hottest functions:
`--cprofile` drains again under cProfile timed by the process's CPU clock (a loaded machine's
waits for a core are not counted, as a wall clock would; its figures are inflated by the
profiler itself, so compare them as shares), `--py-spy` under py-spy
(sampled wall time; `--native` adds C extensions' frames, pausing the daemon to read them). For
benchmarks/PROFILE.md: where a message's cost goes, before and after.

    python -m benchmarks.profile_drain [--rows 20000] [--latency 0] [--recipients 0]
        [--concurrency 64] [--daemons 1] [--cprofile [--keep-profile FILE]]
        [--py-spy [--native]] [--top 25] [--setup-sql FILE]

`--setup-sql` runs a file's SQL on the migrated scratch database before the backlog is filled:
a shape to try (an index, a setting) measured before it becomes a migration.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from benchmarks.scratch import scratch_database
from benchmarks.throughput import (
    BIN,
    ServerCpu,
    Setup,
    daemon_command,
    environ,
    fill_outbox,
    free_port,
    load_average,
    on_connection,
    sent_outbox,
    start_simulator,
    timed,
    wait_for_port,
)

STATEMENTS = """
SELECT calls, total_exec_time, total_plan_time, rows,
       regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = $1 ORDER BY total_exec_time DESC
"""


async def statements(dsn: str, database: str, sent: int, top: int) -> list[str]:
    """The statements the drain ran, most time first: calls and ms per 1,000 messages."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(STATEMENTS, database)
    except asyncpg.PostgresError:
        return ["(pg_stat_statements is not loaded on this server)"]
    finally:
        await conn.close()
    total = sum(float(r["total_exec_time"]) for r in rows)
    planning = sum(float(r["total_plan_time"]) for r in rows)
    lines = [
        f"statements: {sum(int(r['calls']) for r in rows) / sent:.2f} calls/msg, "
        f"{total * 1000 / sent:,.0f} µs/msg executing, {planning * 1000 / sent:,.0f} planning "
        "(planning is counted when pg_stat_statements.track_planning is on)",
        "| calls/1k msg | exec µs/msg | plan µs/msg | exec µs/call | statement |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows[:top]:
        calls, spent = int(row["calls"]), float(row["total_exec_time"])
        plan = float(row["total_plan_time"])
        text = str(row["query"]).strip()[:100].replace("|", "\\|")
        lines.append(
            f"| {calls * 1000 / sent:,.0f} | {spent * 1000 / sent:,.1f} | "
            f"{plan * 1000 / sent:,.1f} | {spent * 1000 / max(calls, 1):,.0f} | `{text}` |"
        )
    return lines


def hottest(raw: Path, top: int) -> list[str]:
    """py-spy's collapsed stacks, summed by function: own samples and total (inclusive)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"py-spy: {samples} samples", "| own % | total % | function |", "| --- | --- | --- |"]
    for frame, n in own.most_common(top):
        lines.append(
            f"| {n * 100 / samples:.1f} | {inclusive[frame] * 100 / samples:.1f} | `{frame}` |"
        )
    lines += ["", "| total % | function (inclusive, outbox only) |", "| --- | --- |"]
    ours = [(f, n) for f, n in inclusive.most_common() if "outbox" in f or "delivery" in f]
    for frame, n in ours[:top]:
        lines.append(f"| {n * 100 / samples:.1f} | `{frame}` |")
    return lines


def _frame(frame: str) -> str:
    """`function (path/file.py:line)` as `function (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


async def main(args: argparse.Namespace) -> None:
    async with scratch_database() as (dsn, version):
        database = dsn.rsplit("/", 1)[-1]
        server = await ServerCpu.connect(dsn)
        port = free_port()
        base_env = dict(os.environ)
        simulator = await start_simulator(port, args.latency, base_env)
        try:
            await wait_for_port(port)
            url = f"http://127.0.0.1:{port}"
            setup = Setup(
                dsn, url, environ(base_env, dsn, url), server, psutil.Process(simulator.pid)
            )
            recipients = args.recipients if 0 < args.recipients < args.rows else args.rows
            print(
                f"PostgreSQL {version}, {os.cpu_count()} cores, {args.rows:,} one-part rows, "
                f"{args.latency:.0f} ms, {args.concurrency} in flight, {args.daemons} daemon(s), "
                f"load before: {load_average()}"
            )
            if args.setup_sql is not None:
                sql = args.setup_sql.read_text()
                await on_connection(dsn, lambda c: run_sql(c, sql))
            await on_connection(dsn, lambda c: fill(c, args.rows, recipients))
            with_stats = await on_connection(dsn, reset_statements)
            wal_before = await wal_position(dsn)
            drain = await timed(
                setup, [daemon_command(args.concurrency)] * args.daemons, sent_outbox
            )
            wal = await wal_position(dsn)
            print(
                f"sent {drain.sent:,} in {drain.seconds:.1f}s: {drain.rate():,.0f} msg/s; "
                "CPU µs/msg: "
                f"daemon {drain.micros(drain.drainer)}, PostgreSQL {drain.micros(drain.server)}, "
                f"simulator {drain.micros(drain.simulator)}; load after: {load_average()}"
            )
            print(wal_written(wal_before, wal, drain.sent))
            if with_stats:
                print("\n".join(await statements(dsn, database, drain.sent, args.top)))
            if args.cprofile:
                await on_connection(dsn, lambda c: fill(c, args.rows, recipients))
                await cpu_profile(setup, args)
            if args.py_spy:
                await on_connection(dsn, lambda c: fill(c, args.rows, recipients))
                await profile(setup, args)
        finally:
            simulator.terminate()
            await simulator.wait()
        if server is not None:
            await server.close()


async def fill(conn: asyncpg.Connection, rows: int, recipients: int) -> int:
    await fill_outbox(conn, rows, recipients)
    return rows


# The server's WAL: bytes inserted so far, records and full-page images (PostgreSQL 14+).
WAL_POSITION = """
SELECT pg_current_wal_insert_lsn() - '0/0' AS bytes, wal_records, wal_fpi FROM pg_stat_wal
"""


async def wal_position(dsn: str) -> tuple[float, float, float]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(WAL_POSITION)
    finally:
        await conn.close()
    assert row is not None
    return float(row["bytes"]), float(row["wal_records"]), float(row["wal_fpi"])


def wal_written(before: tuple[float, ...], after: tuple[float, ...], sent: int) -> str:
    """WAL per message over the drain: the whole server's, so run it on a server of its own."""
    bytes_, records, images = (
        max(a - b, 0.0) / max(sent, 1) for a, b in zip(after, before, strict=True)
    )
    return (
        f"WAL: {bytes_:,.0f} bytes/msg, {records:.1f} records/msg, "
        f"{images:.2f} full-page images/msg"
    )


async def run_sql(conn: asyncpg.Connection, sql: str) -> int:
    await conn.execute(sql)
    return 1


async def reset_statements(conn: asyncpg.Connection) -> int:
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return 0
    return 1


async def profile(setup: Setup, args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        print("(py-spy is not installed)")
        return
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder, "drain.txt")
        command = [spy, "record", "-r", "250", "-f", "raw", "-o", str(raw)]
        # --native: C extensions' own frames too (asyncpg's protocol, uvloop, aiohttp's parser);
        # py-spy must pause the process to read them.
        command.append("--native" if args.native else "--nonblocking")
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command,
            "--",
            *daemon_command(args.concurrency),
            env=setup.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await process.wait()
        print(f"(profiled drain: {time.perf_counter() - started:.1f}s)")
        print("\n".join(hottest(raw, args.top)))


CPROFILE = """
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], ["outbox", *sys.argv[2:]]
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_module("outbox", run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


async def cpu_profile(setup: Setup, args: argparse.Namespace) -> None:
    """The daemon's functions by their own CPU time, then outbox's by their cumulative time."""
    with tempfile.TemporaryDirectory() as folder:
        stats = Path(folder, "drain.prof")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CPROFILE,
            str(stats),
            *daemon_command(args.concurrency)[1:],
            env=setup.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await process.wait()
        if args.keep_profile:
            shutil.copy(stats, args.keep_profile)
        profile = pstats.Stats(str(stats))
        entries: dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]]
        entries = profile.stats  # type: ignore[attr-defined]
        total = sum(own for _, _, own, _, _ in entries.values())
        rows = args.rows

        def name(key: tuple[str, int, str]) -> str:
            path, line, function = key
            return f"{function} ({path.rsplit('/', 1)[-1]}:{line})"

        lines = [
            f"cProfile (process CPU, profiler included): {total:.1f} s",
            "| own % | calls/msg | function |",
            "| --- | --- | --- |",
        ]
        by_own = sorted(entries.items(), key=lambda item: -item[1][2])
        for key, (_, calls, own, _, _) in by_own[: args.top]:
            lines.append(f"| {own * 100 / total:.1f} | {calls / rows:.2f} | `{name(key)}` |")
        lines += ["", "| cumulative % | calls/msg | outbox function |", "| --- | --- | --- |"]
        ours = [item for item in entries.items() if "/outbox/" in item[0][0]]
        for key, (_, calls, _, cumulative, _) in sorted(ours, key=lambda item: -item[1][3])[
            4 : 4 + args.top
        ]:
            lines.append(f"| {cumulative * 100 / total:.1f} | {calls / rows:.2f} | `{name(key)}` |")
        print("\n".join(lines))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--recipients", type=int, default=0, help="0: one per row")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--daemons", type=int, default=1)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument("--native", action="store_true", help="with --py-spy: C frames too")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep-profile", help="also save the cProfile stats to this file")
    parser.add_argument(
        "--setup-sql", type=Path, help="SQL run on the scratch database before the backlog"
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
