"""The end-of-run check: a run that leaves a process behind fails, and the process is stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from tests.conftest import ROOT

LEAKY_TEST = """
import subprocess, sys

def test_leaves_a_process_behind():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    open("leaked.pid", "w").write(str(process.pid))
"""

TIDY_TEST = """
import subprocess, sys

def test_waits_for_its_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def run_pytest(directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    (directory / "test_inner.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "pytest", "-p", "tests.leftovers", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "--basetemp", str(directory / "basetemp"), "test_inner.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_process_left_running_fails_the_run_and_is_stopped(tmp_path: Path) -> None:
    finished = run_pytest(tmp_path, LEAKY_TEST)
    assert finished.returncode == 1, finished.stdout
    assert "1 passed" in finished.stdout
    assert "still running" in finished.stdout
    leaked = int((tmp_path / "leaked.pid").read_text())
    assert not psutil.pid_exists(leaked) or psutil.Process(leaked).status() == "zombie"


def test_a_run_that_stops_what_it_starts_passes(tmp_path: Path) -> None:
    finished = run_pytest(tmp_path, TIDY_TEST)
    assert finished.returncode == 0, finished.stdout
    assert "still running" not in finished.stdout
