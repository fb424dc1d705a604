"""The command line's grammar: every command, option, unit and default of `outbox`, and the
converters that turn bad values into usage errors (exit 2) naming the option and the rule."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from outbox.errors import ConfigurationError
from outbox.logs import LOG_FORMATS, LOG_LEVELS
from outbox.policy.commands import add_optout_command
from outbox.policy.quiet import RULE, QuietHours, parse_quiet_hours
from outbox.policy.tier import RULE as LIMIT_RULE
from outbox.policy.tier import DailyLimit, parse_daily_limit
from outbox.settings import MEDIA_MODES
from outbox.status import MAX_LIST_LIMIT

_DURATION = re.compile(r"^(\d+)([mhd])$")
MAX_DURATION = timedelta(days=36500)
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def parse_duration(text: str) -> timedelta:
    """`90m`, `12h`, `30d`."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a positive number then m, h or d, e.g. 30d"
        )
    duration = timedelta(**{_DURATION_UNITS[match.group(2)]: min(int(match.group(1)), 10**7)})
    if duration > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: at most 100 years")
    return duration


def parse_time(text: str) -> datetime:
    """ISO 8601; UTC when it has no offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601, e.g. 2026-12-01T09:30:00+05:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a positive integer")
    return value


def list_limit(text: str) -> int:
    """`outbox list --limit`: 1 to MAX_LIST_LIMIT rows."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(
            f"invalid limit {text!r}: must be an integer from 1 to {MAX_LIST_LIMIT}"
        )
    return value


def fraction(text: str) -> float:
    """A share from 0 to 1, e.g. `--fail-rate 0.1`."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"invalid fraction {text!r}: must be from 0 to 1")
    return value


def media_mode(text: str) -> str:
    """`--media-mode link|upload`."""
    mode = text.strip().lower()
    if mode not in MEDIA_MODES:
        raise argparse.ArgumentTypeError(f"must be {' or '.join(MEDIA_MODES)}, not {text!r}")
    return mode


def quiet_hours(text: str) -> QuietHours:
    """`--quiet-hours 21:00-09:00`."""
    try:
        return parse_quiet_hours(text)
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be {RULE}") from None


def daily_limit(text: str) -> DailyLimit:
    """`--daily-limit 250|2K|unlimited`."""
    try:
        return parse_daily_limit(text)
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be {LIMIT_RULE}") from None


@dataclass(frozen=True)
class DaemonFlag:
    """One tuning option of `outbox run`, named as the Settings field it overrides."""

    convert: Callable[[str], Any]
    metavar: str
    help: str


DAEMON_FLAGS: dict[str, DaemonFlag] = {
    "concurrency": DaemonFlag(
        int,
        "N",
        "messages (rows) in flight at once, at most: the daemon keeps rate x API latency in "
        "flight, below this; each row sends its parts in order (default 500)",
    ),
    "batch-size": DaemonFlag(int, "N", "rows claimed per database round trip (default 100)"),
    "lease-seconds": DaemonFlag(
        float,
        "S",
        "seconds a claimed row stays this daemon's before another may take it over; "
        "extended while sending (default 30)",
    ),
    "max-attempts": DaemonFlag(
        int,
        "N",
        "counted tries before a row is failed; throttles and pauses do not count (default 10)",
    ),
    "retry-delay": DaemonFlag(
        float,
        "S",
        "seconds before the first durable retry, doubled and jittered on each next "
        "one, capped at 1 h (default 1)",
    ),
    "poll-interval": DaemonFlag(
        float, "S", "seconds between looks at the table when no NOTIFY arrives (default 5)"
    ),
    "rate": DaemonFlag(float, "N", "messages per second to the Graph API, at most (default 80)"),
    "pair-burst": DaemonFlag(
        int, "N", "messages one recipient may get in a burst before pacing starts (default 45)"
    ),
    "pair-interval": DaemonFlag(
        float, "S", "seconds between messages to one recipient once its burst is spent (default 6)"
    ),
    "pause-probe": DaemonFlag(
        float,
        "S",
        "seconds between probe requests while sending is paused by an account error (default 60)",
    ),
    "request-timeout": DaemonFlag(
        float,
        "S",
        "seconds one Graph API request may take; past it the part is in doubt (default 15)",
    ),
    "reconcile-seconds": DaemonFlag(
        float,
        "S",
        "seconds a part in doubt waits for a status webhook naming it before it is "
        "sent again (default 60 with META_APP_SECRET set, else 0)",
    ),
    "max-age": DaemonFlag(
        lambda text: parse_duration(text).total_seconds(),
        "AGE",
        "fail a row without its own expires_at once it is this old: 90m, 12h, 30d (default: never)",
    ),
    "quiet-hours": DaemonFlag(
        quiet_hours,
        "HH:MM-HH:MM",
        "send nothing while it is this late in the recipient's time zone(s), e.g. 21:00-09:00; "
        "rows wait for the opening (default: $OUTBOX_QUIET_HOURS, else any hour)",
    ),
    "daily-limit": DaemonFlag(
        daily_limit,
        "N|unlimited",
        "the business portfolio's messaging limit: unique customers per moving 24 h that "
        "templates outside a customer-service window may reach, shared by every daemon; rows "
        "beyond it wait (tier_budget). Wins over the limit Meta's webhooks report (default: "
        "$OUTBOX_DAILY_LIMIT, else the webhooks' limit, else none)",
    ),
    "media-mode": DaemonFlag(
        media_mode,
        "link|upload",
        "upload: each media file is uploaded to Meta once and sent by its id; link: Meta fetches "
        "the link on every send (default: $OUTBOX_MEDIA_MODE, else upload)",
    ),
    "upload-rate": DaemonFlag(
        float, "N", "media uploads per second per sender, shared by every daemon (default 10)"
    ),
}


DATABASE_URL_HELP = (
    "PostgreSQL URL (default: $OUTBOX_DATABASE_URL, else the embedded server under $OUTBOX_HOME)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="outbox", description="A transactional outbox for WhatsApp messages.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--database-url", metavar="URL", help=DATABASE_URL_HELP)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser(
        "migrate",
        help="upgrade the schema to the latest revision",
        description="Upgrade the outbox tables to the latest revision. Idempotent, and safe to "
        "run from every replica at once.",
    )
    _enqueue_command(commands)
    _query_commands(commands)
    _run_command(commands)
    _server_commands(commands)
    add_optout_command(commands)
    from outbox.commands.templates import add_templates_command

    add_templates_command(commands)
    commands.add_parser(
        "demo",
        help="a story of sends, rollbacks, failures, an outage and a crash, on a local database",
    )
    from outbox.commands.grammar import extend  # its modules use this module's converters

    extend(commands)
    for command in commands.choices.values():  # also after the command, as the README writes it
        command.add_argument(
            "--database-url", metavar="URL", default=argparse.SUPPRESS, help=DATABASE_URL_HELP
        )
    return parser


def _version() -> str:
    try:
        return f"outbox {metadata.version('whatsapp-outbox')}"
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "outbox (not installed)"


def _enqueue_command(commands: Any) -> None:
    p = commands.add_parser(
        "enqueue",
        help="add one message; prints its id",
        description="Insert one message row (committed at once) and print its id.",
    )
    p.add_argument("recipient", nargs="?", help="the recipient's number, digits with country code")
    p.add_argument("message", nargs="?", help="the text, sent after any media (up to 4096 chars)")
    for kind in ("image", "video", "document", "audio"):
        p.add_argument(
            f"--{kind}",
            action="append",
            default=[],
            metavar="URL",
            help=f"{kind} to send before the text, an http or https URL (repeat: 10 media at most)",
        )
    p.add_argument("--template", metavar="NAME", help="send this approved template instead")
    p.add_argument("--language", metavar="CODE", help="the template's language, e.g. en_US")
    p.add_argument(
        "--body-param",
        action="append",
        default=[],
        metavar="V",
        help="the template's body parameters {{1}}, {{2}}, … in order",
    )
    p.add_argument("--header-image", metavar="URL", help="the template's header image")
    p.add_argument(
        "--sender",
        metavar="PHONE_ID",
        help="the phone number id to send from (default: $META_PHONE_NUMBER_ID)",
    )
    p.add_argument(
        "--idempotency-key",
        metavar="K",
        help="a key of your own: enqueueing the same key again returns the first row's id",
    )
    p.add_argument(
        "--send-at", type=parse_time, metavar="ISO", help="not before this time (default: now)"
    )
    p.add_argument(
        "--expires-in",
        type=parse_duration,
        metavar="AGE",
        help="fail the message instead of sending it later than this (90m, 12h, 30d; "
        "default: never)",
    )
    p.add_argument(
        "--quiet-hours",
        metavar="HH:MM-HH:MM",
        help="this message's own quiet hours where its recipient lives, instead of the "
        "daemon's --quiet-hours (e.g. 21:00-09:00; none: any hour)",
    )
    p.add_argument(
        "--timezone",
        metavar="ZONE",
        help="the recipient's time zone for quiet hours, an IANA name such as Europe/Madrid "
        "(default: the zones of the number)",
    )


def _query_commands(commands: Any) -> None:
    p = commands.add_parser("status", help="one message's delivery status and history")
    p.add_argument("id", type=positive_int, help="the message's id")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser("list", help="messages, newest first, a page at a time")  # grammar.py

    p = commands.add_parser("stats", help="counts by status, backlog age, send rate, daemons")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = commands.add_parser(
        "retry", help="put failed messages back to pending (accepted parts are never resent)"
    )
    p.add_argument("ids", nargs="*", type=positive_int, metavar="ID", help="failed messages' ids")
    p = commands.add_parser("cancel", help="cancel pending messages")
    p.add_argument("ids", nargs="*", type=positive_int, metavar="ID", help="pending messages' ids")

    p = commands.add_parser("prune", help="delete finished messages past retention")
    p.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="delete sent, delivered, read, failed and cancelled rows older than this: 90m, "
        "12h, 30d",
    )


def _run_command(commands: Any) -> None:
    p = commands.add_parser(
        "run",
        help="the delivery daemon",
        description="Claim committed rows and send them through the WhatsApp Cloud API until "
        "SIGTERM/SIGINT (or, with --drain, until nothing is left). Run as many as you like "
        "against one database.",
    )
    for flag, spec in DAEMON_FLAGS.items():
        p.add_argument(f"--{flag}", type=spec.convert, metavar=spec.metavar, help=spec.help)
    p.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once nothing is left to send (3 if sending is paused by an account error)",
    )
    p.add_argument(
        "--http-port",
        type=positive_int,
        metavar="P",
        help="serve /metrics, /healthz and /readyz on this port (default: no HTTP server)",
    )
    p.add_argument(
        "--http-host",
        default="127.0.0.1",
        metavar="H",
        help="the address --http-port listens on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    _log_flags(p)


def _log_flags(p: argparse.ArgumentParser) -> None:
    """--log-format and --log-level, the same for every long-running command."""
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines, or one JSON object per line (default text)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="L",
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )


def _server_commands(commands: Any) -> None:
    p = commands.add_parser("simulator", help="a local stand-in for the Graph API")
    p.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default %(default)s)"
    )
    p.add_argument(
        "--port", type=positive_int, default=8099, help="the port to listen on (default 8099)"
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="milliseconds each answer waits (default 0)",
    )
    p.add_argument(
        "--fail-rate",
        type=fraction,
        default=0.0,
        metavar="F",
        help="the share of requests answered HTTP 500, code 131000, from 0 to 1 (default 0)",
    )
    p.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help='per-recipient behaviour, JSON: {"recipients": {"<digits>": [steps]}}',
    )
    p.add_argument(
        "--mps",
        type=float,
        metavar="N",
        help="enforce Meta's throughput limit of N messages per second (default: none)",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="post signed status webhooks (sent, delivered, read) for what it accepts",
    )
    p.add_argument(
        "--status-delay-ms",
        type=float,
        default=200.0,
        metavar="MS",
        help="milliseconds before each status webhook (default 200)",
    )
    p.add_argument(
        "--enforce-window",
        action="store_true",
        help="close the 24-hour window of customers it never heard from too (default: only "
        "customers injected at POST /_simulator/inbound have a window)",
    )
    _log_flags(p)

    p = commands.add_parser(
        "dashboard",
        help="find messages and see what happened to them, in a browser (behind a login)",
        description="Serve the dashboard. Users come from the file OUTBOX_DASHBOARD_USERS names: "
        "one `name:role:bcrypt-hash` line each, role viewer (masked), support (unmasked, may "
        "retry one message) or admin. Cookies are Secure: serve it over HTTPS (a proxy in "
        "front) or on localhost.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default %(default)s)"
    )
    p.add_argument(
        "--port", type=positive_int, default=8070, help="the port to listen on (default 8070)"
    )
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password and print its bcrypt hash for OUTBOX_DASHBOARD_USERS, then exit",
    )

    p = commands.add_parser("webhook", help="receive Meta's status webhooks and inbound messages")
    p.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default %(default)s)"
    )
    p.add_argument(
        "--port", type=positive_int, default=8090, help="the port to listen on (default 8090)"
    )
    _log_flags(p)


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields `outbox run` was given on the command line."""
    names = (flag.replace("-", "_") for flag in DAEMON_FLAGS)
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
