"""`outbox tail` as a real process: it prints history entries as they are appended, filtered,
with recipients masked, and stops cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg2
import pytest

from tests.integration.test_cli import sql

pytestmark = pytest.mark.timeout(60)
ALICE = "923001234567"
BOB = "923007654321"


class Tail:
    def __init__(self, database_url: str, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "outbox", "tail", *argv],
            env={**os.environ, "OUTBOX_DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        started = self.process.stderr.readline()
        assert started.startswith("following the delivery history"), started

    def lines(self, count: int, within: float = 10.0) -> list[str]:
        """The next `count` lines of its stdout."""
        assert self.process.stdout is not None
        found: list[str] = []
        deadline = time.monotonic() + within
        while len(found) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                found.append(self.process.stdout.readline().rstrip("\n"))
        return found

    def quiet(self, seconds: float = 1.5) -> bool:
        """Whether it prints nothing for `seconds`."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        return not ready

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=15)
        return self.process.returncode, err


@pytest.fixture
def follow(database_url: str) -> Iterator[list[Tail]]:
    tails: list[Tail] = []
    yield tails
    for running in tails:
        if running.process.poll() is None:
            running.process.kill()
        running.process.communicate(timeout=15)  # and closes its pipes


def message(database_url: str, recipient: str, status: str = "pending") -> int:
    rows = sql(
        database_url,
        "INSERT INTO outbox_messages (recipient, message, status) "
        f"VALUES ('{recipient}', 'hi', '{status}') RETURNING id",
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def event(database_url: str, message_id: int, kind: str, code: str = "NULL") -> None:
    sql(
        database_url,
        "INSERT INTO outbox_events (message_id, part, kind, http_status, error_code, detail) "
        f"VALUES ({message_id}, 0, '{kind}', 200, {code}, 'wamid.x')",
    )


def test_tail_prints_each_new_event_with_the_recipient_masked(
    database_url: str, follow: list[Tail]
) -> None:
    row = message(database_url, ALICE)
    event(database_url, row, "accepted")  # before it started: not printed
    follow.append(tail := Tail(database_url))
    event(database_url, row, "status:delivered")
    (line,) = tail.lines(1)
    assert f"#{row}" in line
    assert "status:delivered" in line
    assert "+********4567" in line
    assert ALICE not in line


def test_tail_with_show_numbers_prints_recipients_in_full(
    database_url: str, follow: list[Tail]
) -> None:
    row = message(database_url, ALICE)
    follow.append(tail := Tail(database_url, "--show-numbers"))
    event(database_url, row, "accepted")
    assert ALICE in tail.lines(1)[0]


def test_tail_by_recipient_leaves_out_other_recipients(
    database_url: str, follow: list[Tail]
) -> None:
    alice, bob = message(database_url, ALICE), message(database_url, BOB)
    follow.append(tail := Tail(database_url, "--recipient", "+92 300 1234567", "--json"))
    event(database_url, bob, "accepted")
    event(database_url, alice, "accepted")
    (line,) = tail.lines(1)
    assert json.loads(line)["message_id"] == alice
    assert tail.quiet()


def test_tail_by_status_leaves_out_messages_in_other_statuses(
    database_url: str, follow: list[Tail]
) -> None:
    failed, sent = message(database_url, ALICE, "failed"), message(database_url, BOB, "sent")
    follow.append(tail := Tail(database_url, "--status", "failed", "--json"))
    event(database_url, sent, "accepted")
    event(database_url, failed, "permanent", code="131026")
    (line,) = tail.lines(1)
    entry = json.loads(line)
    assert (entry["message_id"], entry["kind"], entry["error_code"]) == (
        failed,
        "permanent",
        131026,
    )


def test_tail_since_prints_earlier_events_first(database_url: str, follow: list[Tail]) -> None:
    row = message(database_url, ALICE)
    event(database_url, row, "accepted")
    follow.append(tail := Tail(database_url, "--since", "1h", "--json"))
    assert [json.loads(line)["kind"] for line in tail.lines(1)] == ["accepted"]


def test_tail_stops_cleanly_on_sigterm(database_url: str, follow: list[Tail]) -> None:
    follow.append(tail := Tail(database_url))
    assert tail.stop(signal.SIGTERM) == (0, "")


def test_tail_stops_cleanly_on_ctrl_c(database_url: str, follow: list[Tail]) -> None:
    follow.append(tail := Tail(database_url))
    assert tail.stop(signal.SIGINT) == (0, "")


def test_an_event_committed_after_a_later_one_is_printed_all_the_same(
    database_url: str, follow: list[Tail]
) -> None:
    """Ids come from a sequence: a transaction holding a lower id can commit after a higher one
    was read. The lower one is asked for again, not skipped."""
    row = message(database_url, ALICE)
    follow.append(tail := Tail(database_url, "--json"))
    slow = psycopg2.connect(database_url)
    try:
        with slow.cursor() as cursor:  # takes the lower id, commits last
            cursor.execute(
                "INSERT INTO outbox_events (message_id, kind) "
                f"VALUES ({row}, 'status:sent') RETURNING id"
            )
            (lower,) = cursor.fetchone()
        event(database_url, row, "accepted")
        (first,) = tail.lines(1)
        assert json.loads(first)["kind"] == "accepted"
        slow.commit()
    finally:
        slow.close()
    (second,) = tail.lines(1)
    assert json.loads(second)["id"] == lower
