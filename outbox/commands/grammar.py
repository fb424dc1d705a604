"""The operator commands' options, added to the parser arguments.py builds: new commands, and
the new options of existing ones."""

from __future__ import annotations

from typing import Any

from outbox.commands import bulk


def extend(commands: Any) -> None:
    """Add every operator command and option to the `outbox` subparsers."""
    for command in ("retry", "cancel"):
        bulk.add_filters(commands.choices[command], command)
