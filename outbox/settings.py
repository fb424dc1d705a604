"""Configuration from the environment, validated once; secrets never appear in its repr."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus

from outbox.errors import ConfigurationError

if TYPE_CHECKING:
    from outbox.policy.quiet import QuietHours
    from outbox.policy.tier import DailyLimit

DEFAULT_GRAPH_API_URL = "https://graph.facebook.com"
DEFAULT_GRAPH_API_VERSION = "v23.0"
DEFAULT_OPTOUT_KEYWORDS = ("STOP", "ALTO", "BAJA", "UNSUBSCRIBE")
MAX_SECONDS = 86400.0 * 3650  # ten years: any longer is a typo, and overflows an interval


# Query parameters asyncpg reads a password from; matched in any case and percent-decoded.
SECRET_QUERY_KEYS = ("password", "sslpassword")
REDACTED = "***"
MIN_SECRET = 4


def _userinfo_password(url: str) -> tuple[int, int] | None:
    """Where the password of `scheme://user:password@host` lies. The authority is taken to end
    at the first '/' and the userinfo at its last '@', so that a '?', '#' or '@' pasted into a
    password without percent-encoding is hidden too (at worst, with some of the host)."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    slash = url.find("/", start)
    at = url.rfind("@", start, len(url) if slash < 0 else slash)
    colon = url.find(":", start, at) if at >= 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def _query_secrets(url: str, after: int) -> Iterator[tuple[int, int]]:
    """Where the values of `password=` and `sslpassword=` query parameters lie, each running to
    the next '&' or '?' (a '#' in a password is hidden too; a second '?' in a malformed URL does
    not hide a password from us, whatever the driver makes of it)."""
    start = url.find("?", after)
    if start < 0:
        return
    for match in _QUERY_PAIR.finditer(url, start):
        if unquote_plus(match.group(1)).lower() in SECRET_QUERY_KEYS:
            yield match.start(2), match.end(2)


_QUERY_PAIR = re.compile(r"[?&]([^=&?]*)=([^&?]*)")


def _password_spans(url: str) -> list[tuple[int, int]]:
    """Every password in a database URL, as (start, end) offsets, last first; they never
    overlap, as the query is looked for after the userinfo."""
    userinfo = _userinfo_password(url)
    spans = [] if userinfo is None else [userinfo]
    spans += _query_secrets(url, after=0 if userinfo is None else userinfo[1])
    return sorted(spans, reverse=True)


def redact_url(url: str) -> str:
    """The URL with every password (`user:password@`, `?password=`, `?sslpassword=`) replaced by
    ***, for logs and error messages."""
    for start, end in _password_spans(url):
        url = url[:start] + REDACTED + url[end:]
    return url


def url_secrets(url: str) -> list[str]:
    """The passwords in a database URL, as written and percent-decoded."""
    found = []
    for start, end in _password_spans(url):
        written = url[start:end]
        found += [written, unquote(written), unquote_plus(written)]
    return [secret for secret in found if secret]


def redact_secrets(text: str, settings: Settings) -> str:
    """`text` with every secret of `settings` replaced by ***, longest first, so that an error
    line never shows one whatever the driver or library put in it. Values of fewer than
    MIN_SECRET characters hide nothing worth hiding and would garble the text ('t' in 'must')."""
    return Redactor(settings)(text)


class Redactor:
    """redact_secrets for one Settings, its secrets found once (Settings is frozen): a log
    formatter masks every record without parsing the database URLs again each time."""

    def __init__(self, settings: Settings) -> None:
        found = sorted(settings.secrets(), key=len, reverse=True)
        self._secrets = tuple(secret for secret in found if len(secret) >= MIN_SECRET)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def default_home() -> Path:
    """Where the embedded PostgreSQL keeps its data when OUTBOX_HOME is unset."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/outbox")
    return Path.home() / ".local" / "share" / "outbox"


MEDIA_MODES = ("upload", "link")


@dataclass(frozen=True)
class Settings:
    """Everything the CLI, the daemon and the webhook receiver read from the environment."""

    database_url: str | None = field(default=None, repr=False)
    # A direct (not pooled) connection for LISTEN when database_url goes through PgBouncer.
    listen_url: str | None = field(default=None, repr=False)
    # The daemon keeps its statements prepared on the server (OUTBOX_PREPARED_STATEMENTS=on):
    # for a database_url that reaches PostgreSQL directly, or through PgBouncer 1.21+ with
    # max_prepared_statements set. None (auto, the default): on each connection that proves it
    # reaches PostgreSQL itself (outbox/direct.py); a pooler in transaction mode, where named
    # statements fail, is never proved direct. False: PostgreSQL plans every statement anew.
    prepared_statements: bool | None = None
    home: Path = field(default_factory=default_home)
    access_token: str | None = field(default=None, repr=False)
    phone_number_id: str | None = None
    graph_api_url: str = DEFAULT_GRAPH_API_URL
    graph_api_version: str = DEFAULT_GRAPH_API_VERSION
    app_secret: str | None = field(default=None, repr=False)
    webhook_verify_token: str | None = field(default=None, repr=False)
    # Where `outbox check` finds the webhook receiver (its /webhook URL, as given to Meta).
    webhook_url: str | None = None
    # The daemon's tuning (CLI flags of `outbox run`).
    concurrency: int = 500  # the ceiling: 1,000 msg/s at 500 ms; see outbox.delivery.pace
    batch_size: int = 100
    lease_seconds: float = 30.0
    max_attempts: int = 10
    retry_delay: float = 1.0
    poll_interval: float = 5.0
    rate: float = 80.0
    pair_burst: int = 45
    pair_interval: float = 6.0
    pause_probe: float = 60.0
    request_timeout: float = 15.0
    shutdown_timeout: float = 30.0
    quick_retries: int = 3
    quick_retry_delay: float = 0.25
    max_age: float = 0.0  # seconds; a row without expires_at fails once this old (0: never)
    # How long a send in doubt waits for a status webhook naming it before it is sent again;
    # None: 60 s when META_APP_SECRET is set (the receiver runs), else 0.
    reconcile_seconds: float | None = None
    # Inbound texts that opt the customer out of marketing (OUTBOX_OPTOUT_KEYWORDS, comma-
    # separated; "none": no keywords). Compared case-insensitively with the whole message.
    optout_keywords: tuple[str, ...] = DEFAULT_OPTOUT_KEYWORDS
    # The dashboard's users: a file of `name:role:bcrypt-hash` lines (OUTBOX_DASHBOARD_USERS).
    dashboard_users: Path | None = None
    # No request while it is night where the customer lives (OUTBOX_QUIET_HOURS, --quiet-hours
    # 21:00-09:00; outbox.policy.quiet). None: send at any hour.
    quiet_hours: QuietHours | None = None
    # The portfolio's messaging limit, unique customers per moving 24 h (OUTBOX_DAILY_LIMIT,
    # --daily-limit 250|2K|unlimited; outbox.policy.tier). None: the one Meta's webhooks told.
    daily_limit: DailyLimit | None = None
    # Media parts: "upload" (each file uploaded once, sent by its media id; outbox/media/) or
    # "link" (Meta fetches the link on every send). OUTBOX_MEDIA_MODE, --media-mode.
    media_mode: str = "upload"
    upload_rate: float = 10.0  # media uploads per second per sender, across daemons

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold: database passwords (in either URL form),
        the access token, the app secret and the webhook verify token."""
        found = url_secrets(self.database_url) if self.database_url else []
        found += url_secrets(self.listen_url) if self.listen_url else []
        found += [self.access_token or "", self.app_secret or "", self.webhook_verify_token or ""]
        return tuple(dict.fromkeys(secret for secret in found if secret))

    def __repr__(self) -> str:
        url = redact_url(self.database_url) if self.database_url else None
        return (
            f"Settings(database_url={url!r}, home={str(self.home)!r}, "
            f"phone_number_id={self.phone_number_id!r}, graph_api_url={self.graph_api_url!r}, "
            f"graph_api_version={self.graph_api_version!r})"
        )

    def __post_init__(self) -> None:
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgresql+asyncpg://", "postgres://")
        ):
            raise ConfigurationError(
                "OUTBOX_DATABASE_URL: must start with postgresql:// or postgresql+asyncpg://"
            )
        if self.listen_url is not None and not self.listen_url.startswith(
            ("postgresql://", "postgresql+asyncpg://", "postgres://")
        ):
            raise ConfigurationError(
                "OUTBOX_LISTEN_URL: must start with postgresql:// or postgresql+asyncpg://"
            )
        if not self.graph_api_url.startswith(("http://", "https://")):
            raise ConfigurationError("META_GRAPH_API_URL: must be an http(s) URL")
        for name in ("concurrency", "batch_size", "max_attempts", "pair_burst", "quick_retries"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name.replace('_', '-')}: must be at least 1")
        for name in (
            "lease_seconds",
            "retry_delay",
            "poll_interval",
            "rate",
            "pair_interval",
            "pause_probe",
            "request_timeout",
            "shutdown_timeout",
            "upload_rate",
        ):
            value = getattr(self, name)
            if not 0 < value <= MAX_SECONDS:
                raise ConfigurationError(
                    f"{name.replace('_', '-')}: must be positive and at most {MAX_SECONDS:.0f}"
                )
        if not 0 <= self.max_age <= MAX_SECONDS:
            raise ConfigurationError(f"max-age: must be at most {MAX_SECONDS:.0f} seconds")
        if self.reconcile_seconds is not None and not 0 <= self.reconcile_seconds <= MAX_SECONDS:
            raise ConfigurationError("reconcile-seconds: must be from 0 to ten years")
        if self.max_age < 0:
            raise ConfigurationError("max-age: must not be negative")
        if self.media_mode not in MEDIA_MODES:
            raise ConfigurationError(
                f"media-mode (OUTBOX_MEDIA_MODE): must be {' or '.join(MEDIA_MODES)}, "
                f"not {self.media_mode!r}"
            )
        if self.quick_retry_delay < 0:
            raise ConfigurationError("quick-retry-delay: must not be negative")

    @property
    def reconcile_window(self) -> float:
        """Seconds a send in doubt waits for its status webhook (see reconcile_seconds)."""
        if self.reconcile_seconds is not None:
            return self.reconcile_seconds
        return 60.0 if self.app_secret else 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from OUTBOX_* and META_* variables; empty values count as unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        home = get("OUTBOX_HOME")
        return cls(
            database_url=get("OUTBOX_DATABASE_URL"),
            listen_url=get("OUTBOX_LISTEN_URL"),
            prepared_statements=_auto_flag(
                get("OUTBOX_PREPARED_STATEMENTS"), "OUTBOX_PREPARED_STATEMENTS"
            ),
            home=Path(home).expanduser() if home else default_home(),
            access_token=get("META_ACCESS_TOKEN"),
            phone_number_id=get("META_PHONE_NUMBER_ID"),
            graph_api_url=(get("META_GRAPH_API_URL") or DEFAULT_GRAPH_API_URL).rstrip("/"),
            graph_api_version=get("META_GRAPH_API_VERSION") or DEFAULT_GRAPH_API_VERSION,
            app_secret=get("META_APP_SECRET"),
            webhook_verify_token=get("META_WEBHOOK_VERIFY_TOKEN"),
            optout_keywords=_keywords(get("OUTBOX_OPTOUT_KEYWORDS")),
            webhook_url=get("OUTBOX_WEBHOOK_URL"),
            dashboard_users=_path(get("OUTBOX_DASHBOARD_USERS")),
            quiet_hours=_quiet_hours(get("OUTBOX_QUIET_HOURS")),
            daily_limit=_daily_limit(get("OUTBOX_DAILY_LIMIT")),
            media_mode=(get("OUTBOX_MEDIA_MODE") or "upload").lower(),
        )


def _auto_flag(value: str | None, name: str) -> bool | None:
    """An on/off variable that may be left to outbox: on, true, yes, 1 or off, false, no, 0;
    auto, the default, is None."""
    word = (value or "auto").lower()
    if word == "auto":
        return None
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    raise ConfigurationError(f"{name}: must be auto, on or off, not {value!r}")


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _keywords(value: str | None) -> tuple[str, ...]:
    """OUTBOX_OPTOUT_KEYWORDS: comma-separated; "none": no keywords; unset: the defaults."""
    if value is None:
        return DEFAULT_OPTOUT_KEYWORDS
    if value.lower() == "none":
        return ()
    return tuple(word.strip() for word in value.split(",") if word.strip())


def _quiet_hours(value: str | None) -> QuietHours | None:
    """OUTBOX_QUIET_HOURS: HH:MM-HH:MM; unset: none."""
    if value is None:
        return None
    from outbox.policy.quiet import parse_quiet_hours  # the policy package imports this module

    return parse_quiet_hours(value, "OUTBOX_QUIET_HOURS")


def _daily_limit(value: str | None) -> DailyLimit | None:
    """OUTBOX_DAILY_LIMIT: 250, 2K, TIER_10K, unlimited...; unset: the webhooks' limit."""
    if value is None:
        return None
    from outbox.policy.tier import parse_daily_limit  # the policy package imports this module

    return parse_daily_limit(value, "OUTBOX_DAILY_LIMIT")
