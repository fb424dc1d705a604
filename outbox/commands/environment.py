"""Which environment variables each command reads, for the end of its --help (issue 17: 4)."""

from __future__ import annotations

import argparse
from typing import Any

VARIABLES = {
    "OUTBOX_DATABASE_URL": "the PostgreSQL URL (unset: the embedded server under OUTBOX_HOME)",
    "OUTBOX_HOME": "the embedded PostgreSQL's data (default ~/.local/share/outbox)",
    "OUTBOX_LISTEN_URL": "a direct connection for LISTEN (default: the database URL)",
    "OUTBOX_WEBHOOK_URL": "the receiver's public /webhook URL, to check it",
    "META_ACCESS_TOKEN": "the Graph API token (never printed)",
    "META_PHONE_NUMBER_ID": "the phone number id to send from",
    "META_GRAPH_API_URL": "the Graph API (default https://graph.facebook.com)",
    "META_GRAPH_API_VERSION": "its version (default v23.0)",
    "META_APP_SECRET": "verifies (receiver) or signs (simulator) webhooks",
    "META_WEBHOOK_VERIFY_TOKEN": "answers Meta's webhook verification",
    "OUTBOX_OPTOUT_KEYWORDS": "inbound texts that opt a customer out of marketing",
    "OUTBOX_RATE_CARD": "the rate card CSV that prices charged messages",
    "OUTBOX_QUIET_HOURS": "HH:MM-HH:MM when nothing is sent (the recipient's local time)",
    "OUTBOX_MEDIA_MODE": "upload (default: each file uploaded once) or link",
}
_DATABASE = ("OUTBOX_DATABASE_URL", "OUTBOX_HOME")
_GRAPH = (
    "META_ACCESS_TOKEN",
    "META_PHONE_NUMBER_ID",
    "META_GRAPH_API_URL",
    "META_GRAPH_API_VERSION",
)
READS: dict[str, tuple[str, ...]] = {
    "run": (
        *_DATABASE,
        "OUTBOX_LISTEN_URL",
        *_GRAPH,
        "META_APP_SECRET",
        "OUTBOX_QUIET_HOURS",
        "OUTBOX_MEDIA_MODE",
    ),
    "webhook": (
        *_DATABASE,
        "META_APP_SECRET",
        "META_WEBHOOK_VERIFY_TOKEN",
        "OUTBOX_OPTOUT_KEYWORDS",
        "OUTBOX_RATE_CARD",
    ),
    "stats": (*_DATABASE, "OUTBOX_RATE_CARD"),
    "enqueue": (*_DATABASE, "OUTBOX_RATE_CARD"),
    "status": (*_DATABASE, "META_PHONE_NUMBER_ID"),
    "optout": (*_DATABASE, "META_PHONE_NUMBER_ID"),
    "simulator": ("META_ACCESS_TOKEN", "META_PHONE_NUMBER_ID", "META_APP_SECRET"),
    "check": (*_DATABASE, *_GRAPH, "META_WEBHOOK_VERIFY_TOKEN", "OUTBOX_WEBHOOK_URL"),
}
_NOTES = {
    "status": {"META_PHONE_NUMBER_ID": "the sender of rows without one, for their window"},
    "optout": {"META_PHONE_NUMBER_ID": "the sender when --sender is not given"},
    "run": {"META_APP_SECRET": "set: sends in doubt wait 60 s for a status webhook"},
    "stats": {"OUTBOX_RATE_CARD": "prices --cost"},
    "enqueue": {"OUTBOX_RATE_CARD": "prices the --dry-run estimate"},
    "webhook": {"OUTBOX_RATE_CARD": "prices the charged amount in /metrics"},
    "simulator": {
        "META_ACCESS_TOKEN": "when set, the bearer token it accepts",
        "META_PHONE_NUMBER_ID": "when set, the phone number id it accepts",
        "META_APP_SECRET": "signs the status webhooks of --webhook-url",
    },
}


class _KeepsEpilogLines(argparse.HelpFormatter):
    """Wraps the description as usual, and keeps the epilog's lines as they are written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("environment:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def describe(command: str) -> str:
    names = READS.get(command, _DATABASE)
    notes = _NOTES.get(command, {})
    width = max(len(name) for name in names)
    lines = ["environment:"]
    lines += [f"  {name:<{width}}  {notes.get(name, VARIABLES[name])}" for name in names]
    return "\n".join(lines)


def add_epilogs(commands: Any) -> None:
    """End every command's --help with the variables it reads (its flags override them)."""
    for name, parser in commands.choices.items():
        parser.epilog = describe(name)
        parser.formatter_class = _KeepsEpilogLines
