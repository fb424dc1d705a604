"""Nothing outlives a test run: a pytest plugin (loaded by tests/conftest.py) that fails the run
when a process it started is still alive at the end, and stops that process.

Every process the run starts inherits RUN_OF_OUTBOX_TESTS=<this run's id> from pytest's environment,
also servers that pg_ctl detached from their parent, so the run's own processes are told apart from
those of any other run (or the shared PostgreSQL) by that mark alone, never by name.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from contextlib import suppress

import psutil
import pytest

MARK = "RUN_OF_OUTBOX_TESTS"  # not OUTBOX_: tests strip those from the environments they pass
GRACE_SECONDS = 5.0


def pytest_configure(config: pytest.Config) -> None:
    os.environ[MARK] = uuid.uuid4().hex


def left_running(run_id: str) -> list[psutil.Process]:
    """Live processes marked with `run_id`, and live children of this process (this one aside)."""
    me = os.getpid()
    found = {child.pid: child for child in psutil.Process(me).children(recursive=True)}
    for process in psutil.process_iter():
        if process.pid == me or process.pid in found:
            continue
        with suppress(psutil.Error):
            if process.environ().get(MARK) == run_id:
                found[process.pid] = process
    return [process for process in found.values() if _alive(process)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} ({process.username()}): {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


def stop(processes: list[psutil.Process]) -> None:
    """A postmaster gets a fast shutdown (SIGINT), anything else SIGTERM; SIGKILL after a grace."""
    for process in processes:
        with suppress(psutil.Error):
            process.send_signal(signal.SIGINT if process.name() == "postgres" else signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=GRACE_SECONDS)
    for process in alive:
        with suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=GRACE_SECONDS)


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, which stops our servers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run_id = os.environ.get(MARK, "")
    deadline = time.monotonic() + GRACE_SECONDS
    left = left_running(run_id)
    while left and time.monotonic() < deadline:  # a server may still be finishing its shutdown
        time.sleep(0.1)
        left = left_running(run_id)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(left)} process(es) started by this run were still running; stopped now:"]
    lines += [f"  {_describe(process)}" for process in left]
    if reporter is not None:
        reporter.write_sep("=", "processes left running", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines))
    stop(left)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
