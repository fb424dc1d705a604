"""A bounded local spool of webhook bodies, for when the database cannot take them now.

Each batch is one file, written under a temporary name, fsynced, renamed, and the directory
fsynced: once `write` returns, the bodies survive a SIGKILL or a power cut. Files are named by
time, so a sorted listing is oldest first. A file is deleted only after its bodies are committed
to the database; one process replays a file at a time (an exclusive flock), so receivers sharing
a directory never both replay it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("outbox.webhooks")

MAGIC = b"outbox-spool 1\n"
_RECORD = struct.Struct(">II")  # body length, crc32 of the body
SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool holds its maximum; the bodies were not written."""


class SpoolCorrupt(Exception):
    """A spool file does not read back as written (a disk fault); it is set aside."""


class Spool:
    """Files of bodies under `directory`, at most `max_bytes` in all (as counted by this
    process, which also counts what it found there at open)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sequence = 0
        self._lock = threading.Lock()  # writes and removals run in worker threads

    def __repr__(self) -> str:
        return f"<Spool {self.directory} {self.bytes}/{self.max_bytes} bytes>"

    def open(self) -> None:
        """Create the directory (private to this user), delete what a dead process left half
        written, and count what is there."""
        (self.directory / "tmp").mkdir(mode=0o700, parents=True, exist_ok=True)
        for partial in (self.directory / "tmp").iterdir():
            if not _pid_alive(partial.name.split("-", 1)[0]):
                partial.unlink(missing_ok=True)
        self.bytes = sum(_size(path) for path in self.files())

    def write(self, bodies: list[bytes]) -> Path:
        """Write `bodies` durably as one file; raises SpoolFull when it would exceed the bound
        (nothing is written then) and OSError when the disk refuses."""
        data = b"".join(
            [MAGIC, *(_RECORD.pack(len(b), zlib.crc32(b)) + b for b in bodies)],
        )
        with self._lock:
            if self.bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"the spool holds {self.bytes} of {self.max_bytes} bytes")
            self.bytes += len(data)  # reserved now, so that concurrent writes respect the bound
            self._sequence += 1
            sequence = self._sequence
        try:
            return self._write_file(data, sequence)
        except BaseException:
            with self._lock:
                self.bytes -= len(data)
            raise

    def _write_file(self, data: bytes, sequence: int) -> Path:
        # Another receiver sharing the folder may have removed it, empty, as it stopped.
        (self.directory / "tmp").mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{sequence:08d}"
        partial = self.directory / "tmp" / f"{os.getpid()}-{name}"
        final = self.directory / f"{name}{SUFFIX}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(partial, final)
        _fsync_directory(self.directory)
        return final

    def files(self) -> list[Path]:
        """The spooled files, oldest first."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[bytes] | None]:
        """The bodies of `path`, held exclusively while the block runs; None when another
        process holds it or it is gone. Call `remove(path)` inside the block once committed."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # replayed and deleted by another process since we opened it
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
            yield _decode(data, path)
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        """Delete a replayed file (its bodies are committed)."""
        size = _size(path)
        path.unlink(missing_ok=True)
        _fsync_directory(self.directory)
        with self._lock:
            self.bytes = max(0, self.bytes - size)

    def set_aside(self, path: Path) -> Path:
        """Move an unreadable file out of the way, into `corrupt/`, for a human to look at."""
        aside = self.directory / "corrupt"
        aside.mkdir(mode=0o700, exist_ok=True)
        size = _size(path)
        target = aside / path.name
        os.rename(path, target)
        with self._lock:
            self.bytes = max(0, self.bytes - size)
        return target

    def close(self) -> None:
        """Remove the directory when nothing is left in it (tests and one-off runs leave no
        empty folders behind)."""
        with contextlib.suppress(OSError):
            (self.directory / "tmp").rmdir()
            self.directory.rmdir()


def _decode(data: bytes, path: Path) -> list[bytes]:
    if not data.startswith(MAGIC):
        raise SpoolCorrupt(f"{path.name}: not a spool file")
    bodies, offset = [], len(MAGIC)
    while offset < len(data):
        if offset + _RECORD.size > len(data):
            raise SpoolCorrupt(f"{path.name}: truncated at byte {offset}")
        length, crc = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        body = data[offset : offset + length]
        if len(body) != length or zlib.crc32(body) != crc:
            raise SpoolCorrupt(f"{path.name}: damaged record at byte {offset}")
        bodies.append(body)
        offset += length
    return bodies


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
