"""Building the package from a clone leaves the clone as it was (issue 17: `pip install .` left
build/ and *.egg-info behind), and the wheel carries the migrations and the type marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh clone of this checkout's HEAD, and the wheel `pip wheel .` built from it."""
    base = tmp_path_factory.mktemp("packaging")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
        cwd=clone,
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("*.whl")
    return clone, wheel


@pytest.mark.timeout(360)
def test_building_the_package_leaves_nothing_in_the_clone(built: tuple[Path, Path]) -> None:
    clone, _ = built
    left = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=clone,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert left == ""


@pytest.mark.timeout(360)
def test_the_wheel_ships_the_migrations_inside_the_package(built: tuple[Path, Path]) -> None:
    _, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "outbox/migrations/env.py" in names
    assert "outbox/migrations/script.py.mako" in names
    assert any(name.startswith("outbox/migrations/versions/0001_") for name in names)
    assert "outbox/py.typed" in names
    assert "outbox/dashboard/templates/message.html" in names
    assert "outbox/dashboard/static/live.js" in names
    assert not any("__pycache__" in name for name in names)
