"""The operator commands' options, added to the parser arguments.py builds: new commands, and
the new options of existing ones."""

from __future__ import annotations

import argparse
from typing import Any

from outbox.commands import (
    breakdown,
    bulk,
    check,
    cost,
    enqueue_json,
    environment,
    estimate,
    inbound,
    listing,
    pause,
    tail,
)


def extend(commands: Any) -> None:
    """Add every operator command and option to the `outbox` subparsers."""
    for command in ("retry", "cancel"):
        bulk.add_filters(commands.choices[command], command)
    breakdown.add_options(commands.choices["stats"])
    cost.add_options(commands.choices["stats"])
    listing.add_options(commands.choices["list"])
    enqueue_json.add_options(commands.choices["enqueue"])
    estimate.add_options(commands.choices["enqueue"])
    inbound.add_command(commands)
    pause.add_commands(commands)
    tail.add_command(commands)
    check.add_command(commands)
    environment.add_epilogs(commands)  # last: every command is there


def check_usage(args: argparse.Namespace) -> None:
    """Refuse bad combinations of options before any connection (or embedded server) is made:
    UsageError, exit 2."""
    if args.command in ("retry", "cancel"):
        bulk.check_usage(args)
    elif args.command == "tail":
        tail.check_usage(args)
    elif args.command == "enqueue":
        enqueue_json.check_usage(args)
        estimate.check_usage(args)
    elif args.command in ("pause", "resume"):
        pause.check_usage(args)
    elif args.command == "inbound":
        inbound.check_usage(args)
    elif args.command == "list":
        listing.check_usage(args)
    elif args.command == "stats":
        (cost.check_usage if args.cost else breakdown.check_usage)(args)
