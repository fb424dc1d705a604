"""The receiver's local spool: durable files of bodies, bounded, read back oldest first, claimed
by one process at a time, damaged files set aside."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from outbox.webhooks.app import spool_folder
from outbox.webhooks.spool import Spool, SpoolCorrupt, SpoolFull


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool", max_bytes=10_000)
    spool.open()
    return spool


def test_bodies_read_back_as_written_oldest_file_first(spool: Spool) -> None:
    spool.write([b"first", b"second"])
    spool.write([b"third"])
    read = []
    for path in spool.files():
        with spool.claim(path) as bodies:
            read.append(bodies)
    assert read == [[b"first", b"second"], [b"third"]]


def test_a_write_past_the_bound_is_refused_and_leaves_nothing(spool: Spool) -> None:
    spool.write([b"x" * 6000])
    with pytest.raises(SpoolFull):
        spool.write([b"y" * 6000])
    assert len(spool.files()) == 1


def test_a_removed_file_frees_its_room(spool: Spool) -> None:
    path = spool.write([b"x" * 6000])
    spool.remove(path)
    spool.write([b"y" * 6000])
    assert spool.bytes < spool.max_bytes


def test_what_is_there_counts_against_the_bound_after_a_restart(
    spool: Spool, tmp_path: Path
) -> None:
    spool.write([b"x" * 6000])
    again = Spool(tmp_path / "spool", max_bytes=10_000)
    again.open()
    with pytest.raises(SpoolFull):
        again.write([b"y" * 6000])


def test_a_file_held_by_another_process_is_not_claimed(spool: Spool) -> None:
    path = spool.write([b"body"])
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fork() == 0:  # flock locks are per open file: a child's own open contends
            with spool.claim(path) as bodies:
                os._exit(0 if bodies is None else 1)
        _, status = os.wait()
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_a_damaged_file_is_reported_and_can_be_set_aside(spool: Spool) -> None:
    path = spool.write([b"a body long enough to damage"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt), spool.claim(path):
        pass
    aside = spool.set_aside(path)
    assert aside.parent.name == "corrupt"
    assert spool.files() == []


def test_a_half_written_file_of_a_dead_process_is_deleted_at_open(
    spool: Spool, tmp_path: Path
) -> None:
    dead = tmp_path / "spool" / "tmp" / "999999999-0-1"
    dead.write_bytes(b"partial")
    Spool(tmp_path / "spool", max_bytes=10_000).open()
    assert not dead.exists()
    assert spool.files() == []


def test_a_write_recreates_the_folder_another_receiver_removed_as_it_stopped(
    spool: Spool,
) -> None:
    Spool(spool.directory, max_bytes=10_000).close()  # the other one, sharing the folder
    assert not spool.directory.exists()
    spool.write([b"still spooled"])
    assert len(spool.files()) == 1


def test_the_default_spool_of_a_database_does_not_depend_on_connection_options(
    tmp_path: Path,
) -> None:
    plain = spool_folder(tmp_path, "postgresql://app@db.example:5432/shop")
    tuned = spool_folder(tmp_path, "postgresql://app@db.example/shop?application_name=outbox")
    other = spool_folder(tmp_path, "postgresql://app@db.example:5432/staging")
    assert plain == tuned != other
