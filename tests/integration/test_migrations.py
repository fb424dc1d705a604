"""The schema comes from alembic: from the project root, through `outbox migrate` anywhere, and
from an installed (non-editable) wheel, with no drift between the metadata and the revisions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from outbox import migrate
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def run(
    args: list[str], cwd: Path, database_url: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "OUTBOX_DATABASE_URL": database_url, **env}
    return subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def tables(database_url: str) -> set[str]:
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def test_alembic_upgrade_check_and_downgrade_work_from_the_project_root(
    empty_database_url: str,
) -> None:
    alembic = str(BIN / "alembic")
    upgraded = run([alembic, "upgrade", "head"], ROOT, empty_database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "outbox_messages" in tables(empty_database_url)

    checked = run([alembic, "check"], ROOT, empty_database_url)
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    downgraded = run([alembic, "downgrade", "base"], ROOT, empty_database_url)
    assert downgraded.returncode == 0, downgraded.stderr
    assert "outbox_messages" not in tables(empty_database_url)


def test_alembic_accepts_the_asyncpg_driver_suffix(empty_database_url: str) -> None:
    url = empty_database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    upgraded = run([str(BIN / "alembic"), "upgrade", "head"], ROOT, url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "outbox_messages" in tables(empty_database_url)


def test_outbox_migrate_works_from_another_directory_and_is_idempotent(
    empty_database_url: str, tmp_path: Path
) -> None:
    for _ in range(2):
        migrated = run([str(BIN / "outbox"), "migrate"], tmp_path, empty_database_url)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.strip() == f"schema at revision {migrate.head_revision()}"
    assert "outbox_messages" in tables(empty_database_url)


def test_concurrent_migrations_apply_the_schema_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    environ = {**os.environ, "OUTBOX_DATABASE_URL": empty_database_url}
    processes = [
        subprocess.Popen(
            [str(BIN / "outbox"), "migrate"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr


@pytest.mark.timeout(300)
def test_migrations_ship_inside_a_non_editable_install(
    empty_database_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert installed.returncode == 0, installed.stderr
    assert (target / "outbox" / "migrations" / "versions").is_dir()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy of outbox is importable: the checkout is not on the path.
    migrated = run(
        [sys.executable, "-m", "outbox", "migrate"],
        elsewhere,
        empty_database_url,
        PYTHONPATH=str(target),
        PYTHONSAFEPATH="1",
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "outbox_messages" in tables(empty_database_url)


def test_every_revision_is_known_as_ours_to_the_version_table_move() -> None:
    revisions = {path.name[:4] for path in (ROOT / "migrations" / "versions").glob("0*.py")}
    assert set(migrate.REVISION_TABLES) == revisions


def test_the_head_revision_the_daemon_checks_without_alembic_is_alembics_head() -> None:
    assert migrate.head_revision() == migrate.HEAD_REVISION


def _execute(database_url: str, sql: str) -> list[tuple[object, ...]]:
    connection = psycopg2.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def test_0020_keeps_each_cached_media_id_under_the_kind_its_type_names(
    empty_database_url: str,
) -> None:
    alembic = str(BIN / "alembic")
    before = run([alembic, "upgrade", "0019"], ROOT, empty_database_url)
    assert before.returncode == 0, before.stderr
    _execute(
        empty_database_url,
        "INSERT INTO outbox_media (sender, url, sha256, media_id, mime_type, bytes, uploaded_at) "
        "VALUES ('1', 'https://a/menu', 'h1', '11', 'application/pdf', 10, now()),"
        "       ('1', 'https://a/room', 'h2', '12', 'image/jpeg', 10, now()),"
        "       ('1', 'https://a/tour', 'h3', '13', 'video/mp4', 10, now()),"
        "       ('1', 'https://a/song', 'h4', '14', 'audio/mp4', 10, now()),"
        "       ('1', 'https://a/what', 'h5', '15', 'application/zip', 10, now())",
    )
    upgraded = run([alembic, "upgrade", "head"], ROOT, empty_database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    kinds = _execute(empty_database_url, "SELECT url, kind FROM outbox_media ORDER BY media_id")
    assert kinds == [
        ("https://a/menu", "document"),
        ("https://a/room", "image"),
        ("https://a/tour", "video"),
        ("https://a/song", "audio"),
    ]  # a type no kind takes was never uploaded by outbox: dropped (uploading again is safe)
    downgraded = run([alembic, "downgrade", "0019"], ROOT, empty_database_url)
    assert downgraded.returncode == 0, downgraded.stderr
