"""Dashboard users: `name:role:bcrypt-hash` lines in the file OUTBOX_DASHBOARD_USERS names.

Passwords are never stored or compared in clear: only bcrypt hashes, checked in constant time,
and a login for an unknown name costs as much as one for a known name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import bcrypt

from outbox.errors import ConfigurationError


class Role(StrEnum):
    VIEWER = "viewer"  # sees messages with phone numbers and bodies masked
    SUPPORT = "support"  # sees them unmasked; may retry, cancel or resend one message
    ADMIN = "admin"  # as support, and bulk actions on every message a filter matches

    @property
    def unmasked(self) -> bool:
        return self in (Role.SUPPORT, Role.ADMIN)

    @property
    def may_retry(self) -> bool:
        """Retry, cancel or resend one message."""
        return self in (Role.SUPPORT, Role.ADMIN)

    @property
    def may_bulk(self) -> bool:
        return self is Role.ADMIN


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: bytes = field(repr=False)


@functools.cache
def _dummy_hash() -> bytes:
    """Compared against when the name is unknown, so that the answer takes as long either way.
    Made once, when the users are loaded: not on import, where it cost every command 0.2 s."""
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=12))


def hash_password(password: str, *, rounds: int = 12) -> str:
    """A bcrypt hash for a users file line."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def parse_users(text: str, source: str = "OUTBOX_DASHBOARD_USERS") -> dict[str, User]:
    """Users by name; ConfigurationError naming the line that is malformed. Blank lines and
    lines starting with # are skipped."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, password_hash = rest.partition(":")
        if not name or role not in set(Role) or not password_hash.startswith("$2"):
            raise ConfigurationError(
                f"{source} line {number}: expected name:role:bcrypt-hash with role one of "
                f"{', '.join(Role)} (make a hash with `outbox dashboard --hash-password`)"
            )
        if name in users:
            raise ConfigurationError(f"{source} line {number}: user {name!r} appears twice")
        users[name] = User(name, Role(role), password_hash.encode())
    return users


def load_users(path: Path) -> dict[str, User]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"OUTBOX_DASHBOARD_USERS: cannot read {path} ({exc.strerror})"
        ) from None
    users = parse_users(text, source=str(path))
    if not users:
        raise ConfigurationError(f"OUTBOX_DASHBOARD_USERS: {path} names no user")
    _dummy_hash()
    return users


def authenticate(users: dict[str, User], name: str, password: str) -> User | None:
    """The user whose name and password these are, else None."""
    user = users.get(name)
    candidate = password.encode()[:72]  # bcrypt reads 72 bytes; 5.x refuses longer input
    if user is None:
        bcrypt.checkpw(candidate, _dummy_hash())
        return None
    try:
        return user if bcrypt.checkpw(candidate, user.password_hash) else None
    except ValueError:  # a malformed hash that passed the prefix check
        return None
