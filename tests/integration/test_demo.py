"""`outbox demo` as a user runs it: a subprocess telling five chapters, every fact of which is
checked here against its output and the rows it leaves behind, with no process outliving it.

The demo runs once per database kind (module fixtures): on a fresh OUTBOX_DATABASE_URL database of
the test server, and on an embedded PostgreSQL under a fresh OUTBOX_HOME.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg2
import pytest

from outbox.dashboard.users import authenticate, parse_users
from tests.conftest import admin, with_database

BIN = Path(sys.executable).parent
DEMO_TIMEOUT = 200
pytestmark = pytest.mark.timeout(DEMO_TIMEOUT + 60)


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    processes: tuple[psutil.Process, ...]  # every descendant seen while it ran

    def chapter(self, number: int) -> str:
        """The lines of chapter `number`."""
        chapters = re.split(r"\n(?=\d\. |In all\n)", self.stdout)
        return next(text for text in chapters if text.startswith(f"{number}. "))

    @property
    def totals(self) -> str:
        return self.stdout.split("\nIn all\n", 1)[1].split("\n\n", 1)[0]


def run_demo(env: dict[str, str]) -> DemoRun:
    """`outbox demo`, watching its process tree until it exits."""
    demo = subprocess.Popen(
        [str(BIN / "outbox"), "demo"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[int, psutil.Process] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with suppress(psutil.Error):
                for child in psutil.Process(demo.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        done.set()
        watcher.join()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return DemoRun(demo.returncode, out, err, tuple(seen.values()))


def alive(process: psutil.Process) -> bool:
    """Still running: the same process (pid and start time), and not a zombie."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
    env.update(variables)
    return env


def sql(database_url: str, statement: str) -> list[tuple[object, ...]]:
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def demo_database(server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema: the demo migrates it."""
    name = f"outbox_demo_{uuid.uuid4().hex[:10]}"
    admin(server_dsn, f'CREATE DATABASE "{name}"')
    yield with_database(server_dsn, name)
    admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def demo(demo_database: str) -> DemoRun:
    return run_demo(environment(OUTBOX_DATABASE_URL=demo_database))


def test_demo_exits_zero_with_nothing_on_stderr(demo: DemoRun) -> None:
    assert (demo.returncode, demo.stderr) == (0, "")


def test_committed_booking_has_its_template_and_photo_read(
    demo: DemoRun, demo_database: str
) -> None:
    chapter = demo.chapter(1)
    assert "BEGIN; INSERT booking 1 (Sara, Lakeside Cabin); enqueue messages 1 and 2; COMMIT" in (
        chapter
    )
    assert re.search(r"message 1 +read +template booking_confirmed +1 part ", chapter)
    assert re.search(r"message 2 +read +a photo then text +2 parts ", chapter)
    rows = sql(
        demo_database,
        "SELECT id, status, template->>'name', media->0->>'type', message IS NOT NULL "
        "FROM outbox_messages WHERE id IN (1, 2) ORDER BY id",
    )
    assert rows == [(1, "read", "booking_confirmed", None, False), (2, "read", None, "image", True)]


def test_rolled_back_booking_leaves_nothing_and_sends_nothing(
    demo: DemoRun, demo_database: str
) -> None:
    chapter = demo.chapter(2)
    assert "BEGIN; INSERT booking 2 (Omar, Harbour Loft); enqueue message 3; card declined" in (
        chapter
    )
    assert "1.5 s later: no booking 2, no message 3, no request to the API" in chapter
    assert sql(demo_database, "SELECT count(*) FROM outbox_messages WHERE id = 3") == [(0,)]
    assert sql(demo_database, "SELECT count(*) FROM outbox_demo.bookings WHERE guest = 'Omar'") == [
        (0,)
    ]


def test_number_not_on_whatsapp_fails_with_metas_reason(demo: DemoRun, demo_database: str) -> None:
    chapter = demo.chapter(3)
    assert "Meta's status webhook said:" in chapter
    assert re.search(r"message 4 +failed +\(#131026\) Message undeliverable", chapter)
    rows = sql(demo_database, "SELECT status, error_code FROM outbox_messages WHERE id = 4")
    assert rows == [("failed", 131026)]


def test_messages_wait_out_an_api_outage_then_go(demo: DemoRun, demo_database: str) -> None:
    chapter = demo.chapter(4)
    assert "6 check-in reminders committed, messages 5-10" in chapter
    assert 'the daemon declares an outage ("(#131000) Something went wrong")' in chapter
    assert "2 s later: all 6 wait, none failed" in chapter
    assert "the next probe goes through, and all 6 are read" in chapter
    rows = sql(demo_database, "SELECT status FROM outbox_messages WHERE id BETWEEN 5 AND 10")
    assert rows == [("read",)] * 6


def test_killed_daemon_loses_nothing_and_repeats_nothing(demo: DemoRun, demo_database: str) -> None:
    chapter = demo.chapter(5)
    assert "message 11 is left sending, with 2 of 4 parts recorded" in chapter
    assert "with no daemon running, booking 3 commits: message 12 is pending" in chapter
    assert "nothing lost: messages 11 and 12 read" in chapter
    assert "the API accepted parts 1, 2 before the kill, 3, 4 after, each once" in chapter
    (row,) = sql(demo_database, "SELECT status, parts FROM outbox_messages WHERE id = 11")
    status, parts = row
    assert isinstance(parts, list)
    assert status == "read"
    assert len({part["wamid"] for part in parts}) == 4


def test_a_closed_window_sends_the_fallback_and_an_opt_out_stops_marketing(
    demo: DemoRun, demo_database: str
) -> None:
    chapter = demo.chapter(6)
    assert "last wrote 25 h ago: her 24-hour window is closed" in chapter
    assert (
        "message 13, free-form text, went as its fallback template stay_follow_up: 1 request, read"
        in chapter
    )
    assert re.search(r"message 14 +failed +opted_out: the customer stopped marketing", chapter)
    assert re.search(r"message 15 +read ", chapter)
    assert "1 request for the two: none for the marketing one" in chapter
    assert sql(demo_database, "SELECT sent_fallback FROM outbox_messages WHERE id = 13") == [
        (True,)
    ]
    assert sql(
        demo_database,
        "SELECT count(*) FROM outbox_events WHERE message_id = 14 AND kind = 'accepted'",
    ) == [(0,)]


def test_totals_count_messages_and_parts_apart(demo: DemoRun) -> None:
    lines = demo.totals.splitlines()
    assert lines[0].strip() == (
        "14 messages (18 parts) committed and 1 rolled back: 12 read, 2 failed"
    )
    assert re.fullmatch(
        r"the API got \d+ requests and accepted 17 parts, none of them twice", lines[1].strip()
    )


def test_rows_and_bookings_stay_for_exploring(demo: DemoRun, demo_database: str) -> None:
    assert sql(demo_database, "SELECT count(*) FROM outbox_messages") == [(14,)]
    assert sql(demo_database, "SELECT guest FROM outbox_demo.bookings ORDER BY id") == [
        ("Sara",),
        ("Lena",),
    ]


def test_it_ends_with_outbox_list_and_how_to_explore(demo: DemoRun) -> None:
    closing = demo.stdout.split("\n$ ", 1)[1]
    command, header, *rows = closing.splitlines()
    assert command.endswith("outbox list")
    assert header.split() == ["id", "status", "recipient", "tries", "created_at", "text"]
    listed = [int(line.split()[0]) for line in rows[: rows.index("")]]
    assert listed == [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 2, 1]
    assert "outbox status 11" in closing
    assert 'psql "$OUTBOX_DATABASE_URL"' in closing


def test_it_ends_with_the_dashboard_url_and_a_login_that_works(demo: DemoRun) -> None:
    shown = re.search(
        r"OUTBOX_DASHBOARD_USERS=(\S+) .*outbox dashboard\n"
        r"  then open (http://127\.0\.0\.1:8070/) and log in as demo / (\S+)\n",
        demo.stdout,
    )
    assert shown, demo.stdout[-800:]
    users = parse_users(Path(shown.group(1)).expanduser().read_text())
    assert authenticate(users, "demo", shown.group(3)) is users["demo"]


def test_no_process_outlives_the_demo(demo: DemoRun) -> None:
    daemons = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", demo.stdout)}
    assert len(daemons) == 2
    assert daemons <= {process.pid for process in demo.processes}
    assert [process for process in demo.processes if alive(process)] == []


def test_demo_refuses_a_database_holding_other_messages(database_url: str) -> None:
    sql(
        database_url,
        "INSERT INTO outbox_messages (recipient, message) VALUES ('923001234567', 'mine') "
        "RETURNING id",
    )
    refused = run_demo(environment(OUTBOX_DATABASE_URL=database_url))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith("outbox: OUTBOX_DATABASE_URL holds 1 message(s) the demo")
    assert len(refused.stderr.splitlines()) == 1
    assert sql(database_url, "SELECT status, attempts FROM outbox_messages") == [("pending", 0)]


# --- on the embedded PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="module")
def outbox_home() -> Iterator[Path]:
    """A fresh OUTBOX_HOME outside any home directory (as root the server runs as its own user,
    which must be able to pass through it)."""
    home = Path(tempfile.mkdtemp(prefix="outbox-demo-test-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded_demo(outbox_home: Path) -> DemoRun:
    return run_demo(environment(OUTBOX_HOME=str(outbox_home)))


def servers_of(home: Path) -> list[psutil.Process]:
    data = str(home / "demo" / "postgres")
    found = []
    for process in psutil.process_iter():
        with suppress(psutil.Error):
            if process.name() == "postgres" and data in " ".join(process.cmdline()):
                found.append(process)
    return found


def test_embedded_demo_stops_its_server_and_every_process(
    embedded_demo: DemoRun, outbox_home: Path
) -> None:
    assert (embedded_demo.returncode, embedded_demo.stderr) == (0, "")
    assert "14 messages (18 parts) committed and 1 rolled back" in embedded_demo.stdout
    assert [process for process in embedded_demo.processes if alive(process)] == []
    assert servers_of(outbox_home) == []


def test_embedded_demo_names_the_home_its_rows_can_be_listed_from(
    embedded_demo: DemoRun, outbox_home: Path
) -> None:
    home = outbox_home / "demo"
    assert f"$ OUTBOX_HOME={home} " in embedded_demo.stdout
    assert f"OUTBOX_HOME={home} " in embedded_demo.stdout.split("Explore it further")[1]
    listed = subprocess.run(
        [str(BIN / "outbox"), "list", "--json"],
        env=environment(OUTBOX_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [row["id"] for row in json.loads(listed.stdout)] == [
        15,
        14,
        13,
        12,
        11,
        10,
        9,
        8,
        7,
        6,
        5,
        4,
        2,
        1,
    ]
    assert servers_of(outbox_home) == []  # started for the command, stopped after it
