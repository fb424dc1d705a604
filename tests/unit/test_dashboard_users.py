"""The dashboard's users file: name:role:bcrypt-hash lines, checked line by line."""

from __future__ import annotations

import pytest

from outbox.dashboard.users import Role, authenticate, hash_password, parse_users
from outbox.errors import ConfigurationError

HASH = hash_password("s3cret", rounds=4)


def test_a_users_file_gives_each_user_their_role() -> None:
    users = parse_users(f"# support desk\nana:support:{HASH}\n\nbo:viewer:{HASH}\n")
    assert {name: user.role for name, user in users.items()} == {
        "ana": Role.SUPPORT,
        "bo": Role.VIEWER,
    }


def test_an_unknown_role_names_its_line() -> None:
    with pytest.raises(ConfigurationError, match="line 2"):
        parse_users(f"ana:support:{HASH}\nbo:owner:{HASH}\n")


def test_a_password_in_clear_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="bcrypt-hash"):
        parse_users("ana:support:s3cret\n")


def test_a_user_named_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        parse_users(f"ana:support:{HASH}\nana:viewer:{HASH}\n")


def test_the_right_password_authenticates() -> None:
    users = parse_users(f"ana:support:{HASH}\n")
    assert authenticate(users, "ana", "s3cret") is users["ana"]


def test_a_wrong_password_or_unknown_name_does_not() -> None:
    users = parse_users(f"ana:support:{HASH}\n")
    assert authenticate(users, "ana", "s3cre") is None
    assert authenticate(users, "bo", "s3cret") is None
