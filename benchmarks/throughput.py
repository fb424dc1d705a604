"""Throughput: drain a backlog of one-part rows as fast as each drainer can, side by side in one
run: pgqueuer 1.6 doing one POST per job (benchmarks/pgqueuer_drain.py), the same with each
job's wamid written to the app's row (`pgqueuer-wamid`: what `outbox run` records too), the bare
loop on a bare table (benchmarks/bare.py), the same loop on the outbox table
(benchmarks/reference.py), `outbox run --drain`, and two of them at once.

Each drain starts from the same freshly inserted backlog in a scratch database: rows to distinct
recipients (`--recipients 0`, one per row) and to N repeated ones (`--recipients N`); both are
shown by default. The simulator runs in its own process (`outbox simulator`). Prints messages/s,
the ratio to pgqueuer's, and CPU microseconds per message spent by the drainer's processes (user
+ system, from their rusage), by PostgreSQL (the scratch database's backends and the server's
background processes, read with psutil while the drain runs: the server must be on this
machine; other databases' backends on a shared server are left out) and by the simulator.
`--rate` is raised far above Meta's 80 mps so the figures show the software, not the
limit. Every process runs on uvloop when it is installed (pgqueuer, in the bench extra, pulls it
in); `--no-uvloop` hides it from all of them, as on the default install.

    python -m benchmarks.throughput [--rows 20000] [--latencies 0 100] [--recipients 0 5000]
        [--repeat 1] [--drainers pgqueuer pgqueuer-wamid bare reference outbox outbox2]
        [--no-uvloop]
        [--variant NAME=VALUE ...]

`--variant OUTBOX_X=y` adds one more drainer: one daemon run with that setting, in the same
rounds as the others, for a side-by-side comparison of a setting on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from benchmarks import bare, pgqueuer_drain
from benchmarks.scratch import scratch_database

try:
    from pgqueuer import AsyncpgDriver, Queries
except ImportError:
    raise SystemExit("pgqueuer is missing: pip install -e '.[bench]' (make bench does)") from None

T = TypeVar("T")
BIN = Path(sys.executable).parent
TOKEN, PHONE = "bench-token", "1234567890"
DRAINERS = ("pgqueuer", "pgqueuer-wamid", "bare", "reference", "outbox", "outbox2")
IN_FLIGHT = {0.0: 64, 100.0: 1000}  # the in-flight at each latency
# Row i goes to recipient i % $2: one recipient per row when $2 is the row count.
RECIPIENT = "'92300' || lpad((i % $2)::text, 7, '0')"
# Rows as enqueue() writes them: their recipient checked (checked_recipient, migration 0022).
INSERT_OUTBOX = (
    f"INSERT INTO outbox_messages (recipient, checked_recipient, message) "
    f"SELECT r, r, 'Booking ' || i || ' confirmed' "
    f"FROM generate_series(1, $1) AS i, LATERAL (SELECT {RECIPIENT} AS r) AS x"
)
INSERT_BARE = (
    f"INSERT INTO bare_messages (recipient, body) "
    f"SELECT {RECIPIENT}, 'Booking ' || i || ' confirmed' FROM generate_series(1, $1) AS i"
)
# The stand-in for a missing uvloop, put first on PYTHONPATH by --no-uvloop.
NO_UVLOOP = 'raise ImportError("uvloop hidden by benchmarks.throughput --no-uvloop")\n'


@dataclass
class Drain:
    seconds: float
    sent: int
    drainer: float  # CPU-seconds of the drainer's processes
    server: float | None  # of PostgreSQL's, None when the server is not on this machine
    simulator: float

    def rate(self) -> float:
        return self.sent / self.seconds

    def micros(self, cpu: float | None) -> str:
        return "n/a" if cpu is None else f"{cpu / self.sent * 1e6:,.0f}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environ(base: dict[str, str], dsn: str, url: str) -> dict[str, str]:
    return {
        **base,
        "OUTBOX_DATABASE_URL": dsn,
        "META_ACCESS_TOKEN": TOKEN,
        "META_PHONE_NUMBER_ID": PHONE,
        "META_GRAPH_API_URL": url,
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(process: psutil.Process) -> float:
    """CPU-seconds of a process and of its children it has reaped."""
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


class ServerCpu:
    """CPU-seconds PostgreSQL spends on the scratch database over a drain: its backends (the
    drainers' connections, autovacuum workers) and the server's shared background processes
    (WAL writer, checkpointer, background writer...), read with psutil every 0.1 s from
    pg_stat_activity's pids, so that other databases' work on a shared server is left out. A
    backend that exits counts up to its last reading (its final 0.1 s at most is missed).

    `None` from `start` when the server's processes cannot be read (not on this machine)."""

    def __init__(self, admin: asyncpg.Connection, database: str) -> None:
        self.admin, self.database = admin, database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.processes: dict[int, psutil.Process] = {}

    @classmethod
    async def connect(cls, dsn: str) -> ServerCpu | None:
        """On the server's `postgres` database, so that the sampling is not counted."""
        database = urlsplit(dsn).path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(urlsplit(dsn)._replace(path="/postgres")))
        sampler = cls(admin, database)
        try:
            await sampler.sample(since=0.0)
        except psutil.AccessDenied:
            await admin.close()
            return None
        if not sampler.processes:
            await admin.close()
            return None
        return sampler

    async def sample(self, since: float) -> None:
        """Read every counted process; one first seen that started after `since` starts at 0."""
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
            "OR (datname IS NULL AND backend_type <> 'client backend')",
            self.database,
        )
        for row in rows:
            pid = int(row["pid"])
            try:
                process = self.processes.get(pid) or psutil.Process(pid)
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            if pid not in self.processes:
                self.processes[pid] = process
                born_before = process.create_time() < since
                self.first[pid] = times.user + times.system if born_before else 0.0
            self.last[pid] = times.user + times.system

    async def measure(self, work: Awaitable[T]) -> tuple[T, float]:
        """Await `work` while sampling; its result and the CPU-seconds spent meanwhile."""
        self.first.clear()
        self.last.clear()
        self.processes.clear()
        since = time.time()
        await self.sample(since)
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait([task], timeout=0.1)
            await self.sample(since)
        await asyncio.sleep(0.2)  # the drainers' backends end after them
        await self.sample(since)
        return task.result(), sum(self.last[pid] - self.first[pid] for pid in self.last)

    async def close(self) -> None:
        await self.admin.close()


async def fill_outbox(conn: asyncpg.Connection, rows: int, recipients: int) -> None:
    await conn.execute("TRUNCATE outbox_messages RESTART IDENTITY CASCADE")
    await conn.execute(INSERT_OUTBOX, rows, recipients)
    await conn.execute("VACUUM ANALYZE outbox_messages")


async def fill_bare(conn: asyncpg.Connection, rows: int, recipients: int) -> None:
    await conn.execute(bare.TABLE)
    await conn.execute("TRUNCATE bare_messages RESTART IDENTITY")
    await conn.execute(INSERT_BARE, rows, recipients)
    await conn.execute("VACUUM ANALYZE bare_messages")


async def fill_pgqueuer(conn: asyncpg.Connection, rows: int, recipients: int) -> None:
    """pgqueuer's schema (once, with `pgq autovac`'s settings) and queue, by its own API; and the
    app's rows whose wamids `pgqueuer-wamid` writes, job i naming row i."""
    await conn.execute(pgqueuer_drain.APP_TABLE)
    await conn.execute("TRUNCATE app_messages")
    await conn.execute(
        f"INSERT INTO app_messages (id, recipient, body) "
        f"SELECT i, {RECIPIENT}, 'Booking ' || i || ' confirmed' FROM generate_series(1, $1) AS i",
        rows,
        recipients,
    )
    await conn.execute("VACUUM ANALYZE app_messages")
    queries = Queries(AsyncpgDriver(conn))
    if not await queries.schema_is_installed():
        await queries.install()
        await queries.optimize_autovacuum()
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    payloads: list[bytes | None] = [
        json.dumps(
            {"id": i, "to": f"92300{i % recipients:07d}", "body": f"Booking {i} confirmed"}
        ).encode()
        for i in range(1, rows + 1)
    ]
    for start in range(0, rows, 5000):
        chunk = payloads[start : start + 5000]
        await queries.enqueue([pgqueuer_drain.ENTRYPOINT] * len(chunk), chunk, [0] * len(chunk))
    await conn.execute(f"VACUUM ANALYZE {queries.qbe.settings.queue_table}")


async def sent_outbox(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox_messages WHERE status = 'sent'"))


async def sent_bare(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM bare_messages WHERE status = 'sent'"))


async def sent_pgqueuer(conn: asyncpg.Connection) -> int:
    table = Queries(AsyncpgDriver(conn)).qbe.settings.queue_table_log
    return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE status = 'successful'"))


async def recorded_pgqueuer(conn: asyncpg.Connection) -> int:
    """Jobs that succeeded, and only if each wrote its wamid to its row."""
    recorded = int(await conn.fetchval("SELECT count(wamid) FROM app_messages"))
    return min(recorded, await sent_pgqueuer(conn))


Fill = Callable[[asyncpg.Connection, int, int], Awaitable[None]]
Count = Callable[[asyncpg.Connection], Awaitable[int]]


@dataclass
class Setup:
    dsn: str
    url: str
    env: dict[str, str]
    server: ServerCpu | None
    simulator: psutil.Process


async def on_connection(dsn: str, work: Count) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await work(conn)
    finally:
        await conn.close()


async def timed(setup: Setup, commands: list[list[str]], count: Count) -> Drain:
    """Run the drainers at once from the backlog in place; time until every one has exited."""

    async def run() -> float:
        started = time.perf_counter()
        processes = [
            await asyncio.create_subprocess_exec(*command, env=setup.env, stderr=subprocess.DEVNULL)
            for command in commands
        ]
        codes = [await process.wait() for process in processes]
        if any(codes):
            raise SystemExit(f"a drainer exited with {codes}: {commands[0]}")
        return time.perf_counter() - started

    drainer, simulator = children_cpu(), process_cpu(setup.simulator)
    if setup.server is None:
        seconds, server = await run(), None
    else:
        seconds, server = await setup.server.measure(run())
    return Drain(
        seconds=seconds,
        sent=await on_connection(setup.dsn, count),
        drainer=children_cpu() - drainer,
        server=server,
        simulator=process_cpu(setup.simulator) - simulator,
    )


def daemon_command(in_flight: int) -> list[str]:
    """`outbox run --drain` with `in_flight` rows at most, `--rate` lifted above any drain."""
    return [
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


async def measure(
    setup: Setup,
    rows: int,
    recipients: int,
    latency: float,
    repeat: int = 1,
    only: Sequence[str] = DRAINERS,
    variants: Sequence[str] = (),
) -> list[str]:
    """One table line per drainer: with `repeat` > 1 every drainer drains `repeat` times, in
    rounds (so that a slow spell of a shared machine falls on all of them alike), and its
    median run by msg/s is shown, with the range of msg/s in brackets."""
    in_flight = IN_FLIGHT.get(latency, 64)
    loop = [setup.dsn, setup.url, str(in_flight)]
    daemon = daemon_command(in_flight)
    drainers: list[tuple[str, str, Fill, Count, list[list[str]]]] = [
        (
            "pgqueuer",
            "pgqueuer",
            fill_pgqueuer,
            sent_pgqueuer,
            [[sys.executable, "-m", "benchmarks.pgqueuer_drain", *loop]],
        ),
        (
            "pgqueuer-wamid",
            "pgqueuer, wamid written",
            fill_pgqueuer,
            recorded_pgqueuer,
            [[sys.executable, "-m", "benchmarks.pgqueuer_drain", *loop, "record"]],
        ),
        (
            "bare",
            "bare loop, bare table",
            fill_bare,
            sent_bare,
            [[sys.executable, "-m", "benchmarks.bare", *loop]],
        ),
        (
            "reference",
            "reference loop, outbox table",
            fill_outbox,
            sent_outbox,
            [[sys.executable, "-m", "benchmarks.reference", *loop]],
        ),
        ("outbox", "`outbox run --drain`", fill_outbox, sent_outbox, [daemon]),
        ("outbox2", "`outbox run --drain` x2", fill_outbox, sent_outbox, [daemon, daemon]),
        *[
            (
                variant,
                f"`outbox run --drain`, {variant}",
                fill_outbox,
                sent_outbox,
                [["env", variant, *daemon]],
            )
            for variant in variants
        ],
    ]
    runs: dict[str, list[Drain]] = {}
    for _ in range(repeat):
        for key, name, fill, count, commands in drainers:
            if key not in only and key not in variants:
                continue
            conn = await asyncpg.connect(setup.dsn)
            try:
                await fill(conn, rows, recipients)
            finally:
                await conn.close()
            runs.setdefault(name, []).append(await timed(setup, commands, count))
    results = {name: median_run(drains) for name, drains in runs.items()}
    base = results["pgqueuer"].rate() if "pgqueuer" in results else None
    shown = "distinct" if recipients >= rows else f"{recipients:,}"
    lines = []
    for name, drain in results.items():
        rates = sorted(run.rate() for run in runs[name])
        spread = f" ({rates[0]:,.0f}-{rates[-1]:,.0f})" if len(rates) > 1 else ""
        ratio = f"{drain.rate() / base:.2f}" if base else "-"
        lines.append(
            f"| {shown} | {latency:.0f} ms | {in_flight} | {name} | {drain.sent:,} | "
            f"{drain.rate():,.0f}{spread} | {ratio} | {drain.micros(drain.drainer)} | "
            f"{drain.micros(drain.server)} | {drain.micros(drain.simulator)} |"
        )
    return lines


def setting(text: str) -> str:
    """A `--variant`: NAME=VALUE, NAME an environment variable's name."""
    name, equals, _ = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: a setting is NAME=VALUE")
    return text


def median_run(drains: list[Drain]) -> Drain:
    """The run whose msg/s is the median (the lower middle one of an even count)."""
    ordered = sorted(drains, key=lambda drain: drain.rate())
    return ordered[(len(ordered) - 1) // 2]


async def main(args: argparse.Namespace, base_env: dict[str, str], uvloop: str) -> None:
    async with scratch_database() as (dsn, version):
        server = await ServerCpu.connect(dsn)
        print(
            f"PostgreSQL {version}, {os.cpu_count()} cores, {args.rows:,} one-part rows, "
            f"uvloop in every process: {uvloop}, load average before: {load_average()}"
        )
        if server is None:
            print("(the PostgreSQL server is not on this machine: no CPU figures for it)")
        print(
            "| recipients | API latency | in flight | drainer | sent | msg/s | vs pgqueuer | "
            "drainer µs/msg | PostgreSQL µs/msg | simulator µs/msg |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for latency in args.latencies:
            port = free_port()
            simulator = await start_simulator(port, latency, base_env)
            try:
                await wait_for_port(port)
                url = f"http://127.0.0.1:{port}"
                setup = Setup(
                    dsn=dsn,
                    url=url,
                    env=environ(base_env, dsn, url),
                    server=server,
                    simulator=psutil.Process(simulator.pid),
                )
                for recipients in args.recipients:
                    count = recipients if 0 < recipients < args.rows else args.rows
                    lines = await measure(
                        setup, args.rows, count, latency, args.repeat, args.drainers, args.variant
                    )
                    for line in lines:
                        print(line, flush=True)
            finally:
                simulator.terminate()
                await simulator.wait()
        print(f"load average after: {load_average()}")
        if server is not None:
            await server.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument(
        "--recipients",
        type=int,
        nargs="+",
        default=[0, 5000],
        help="recipients the rows go to, round robin; 0: one per row (default: 0 5000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="drain this many times with each drainer, in rounds, and show the median run "
        "(default: 1)",
    )
    parser.add_argument(
        "--drainers",
        nargs="+",
        choices=DRAINERS,
        default=list(DRAINERS),
        help="which drainers to run (default: all)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        type=setting,
        default=[],
        metavar="NAME=VALUE",
        help="also run one daemon with each of these settings, e.g. "
        "OUTBOX_PREPARED_STATEMENTS=off (default: none)",
    )
    parser.add_argument(
        "--no-uvloop",
        action="store_true",
        help="hide uvloop from every process (drainers, simulator), as on the default install",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as stub:
        base_env = dict(os.environ)
        if args.no_uvloop:
            Path(stub, "uvloop.py").write_text(NO_UVLOOP)
            base_env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [stub, os.environ.get("PYTHONPATH")])
            )
        uvloop = "no (hidden)" if args.no_uvloop else has_uvloop()
        asyncio.run(main(args, base_env, uvloop))


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def has_uvloop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "no (not installed)"
    return f"yes ({importlib.metadata.version('uvloop')})"


async def start_simulator(
    port: int, latency: float, base_env: dict[str, str]
) -> asyncio.subprocess.Process:
    """`outbox simulator` on `port`, answering after `latency` ms, with the benchmarks' token."""
    return await asyncio.create_subprocess_exec(
        *[str(BIN / "outbox"), "simulator", "--port", str(port)],
        *["--latency-ms", str(latency)],
        env={**base_env, "META_ACCESS_TOKEN": TOKEN, "META_PHONE_NUMBER_ID": PHONE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
    cli()
