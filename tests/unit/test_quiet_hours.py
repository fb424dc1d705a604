"""Quiet hours: the window math of outbox.policy.quiet, with fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from outbox.arguments import UsageError, build_parser, run_overrides
from outbox.errors import ConfigurationError
from outbox.policy.quiet import QuietHours, next_opening, parse_quiet_hours, quiet_until
from outbox.settings import Settings

NIGHT = QuietHours(time(21, 0), time(9, 0))
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NEW_YORK = ZoneInfo("America/New_York")
BRAZIL_MOBILE = "5511987654321"


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


def test_sao_paulo_row_at_2330_opens_at_0900_next_day() -> None:
    found = quiet_until(NIGHT, BRAZIL_MOBILE, local(SAO_PAULO, 2026, 12, 6, 23, 30))
    assert found is not None
    opens, wording = found
    assert opens.astimezone(SAO_PAULO) == datetime(2026, 12, 7, 9, 0, tzinfo=SAO_PAULO)
    assert wording == "2026-12-07 09:00 America/Sao_Paulo"


def test_window_wrapping_midnight_is_quiet_after_midnight_until_its_end() -> None:
    opens = next_opening(NIGHT, (SAO_PAULO,), local(SAO_PAULO, 2026, 12, 7, 3, 0))
    assert opens == local(SAO_PAULO, 2026, 12, 7, 9, 0)


def test_outside_the_window_a_row_goes_now() -> None:
    assert quiet_until(NIGHT, BRAZIL_MOBILE, local(SAO_PAULO, 2026, 12, 7, 9, 0)) is None
    assert quiet_until(NIGHT, BRAZIL_MOBILE, local(SAO_PAULO, 2026, 12, 7, 20, 59)) is None


def test_window_within_one_day_does_not_wrap() -> None:
    lunch = QuietHours(time(12, 0), time(14, 0))
    assert next_opening(lunch, (SAO_PAULO,), local(SAO_PAULO, 2026, 12, 7, 23, 0)) is None
    opens = next_opening(lunch, (SAO_PAULO,), local(SAO_PAULO, 2026, 12, 7, 13, 0))
    assert opens == local(SAO_PAULO, 2026, 12, 7, 14, 0)


def test_opening_follows_a_daylight_saving_change() -> None:
    # New York falls back on 2026-11-01 at 02:00: the night is 25 hours long, and 09:00 local
    # is 14:00 UTC (EST), not 13:00 UTC (EDT) as on the evening before.
    opens = next_opening(NIGHT, (NEW_YORK,), local(NEW_YORK, 2026, 10, 31, 22, 0))
    assert opens == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)
    assert opens.astimezone(NEW_YORK).hour == 9


def test_number_with_several_zones_waits_until_quiet_in_none() -> None:
    manaus = ZoneInfo("America/Manaus")  # an hour behind São Paulo
    at = local(SAO_PAULO, 2026, 12, 7, 8, 30)  # 07:30 in Manaus
    opens = next_opening(NIGHT, (SAO_PAULO, manaus), at)
    assert opens == local(manaus, 2026, 12, 7, 9, 0)


def test_number_quiet_in_any_of_its_zones_is_quiet() -> None:
    manaus = ZoneInfo("America/Manaus")
    at = local(SAO_PAULO, 2026, 12, 6, 21, 30)  # 20:30 in Manaus: open there, not in São Paulo
    assert next_opening(NIGHT, (manaus, SAO_PAULO), at) == local(manaus, 2026, 12, 7, 9, 0)


def test_number_of_unknown_zone_is_never_quiet() -> None:
    assert quiet_until(NIGHT, "999123456789", local(SAO_PAULO, 2026, 12, 6, 23, 30)) is None


def test_zones_whose_quiet_hours_cover_the_day_hold_nothing() -> None:
    long_night = QuietHours(time(13, 0), time(12, 0))
    zones = (ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago"))
    assert next_opening(long_night, zones, datetime(2026, 12, 6, 12, 0, tzinfo=UTC)) is None


@pytest.mark.parametrize("text", ["21:00", "24:00-09:00", "9:00-21:00", "21:00-21:00", "x"])
def test_bad_quiet_hours_name_the_setting_and_the_rule(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"OUTBOX_QUIET_HOURS: .*HH:MM-HH:MM"):
        Settings.from_env({"OUTBOX_QUIET_HOURS": text})


def test_quiet_hours_read_from_the_environment() -> None:
    settings = Settings.from_env({"OUTBOX_QUIET_HOURS": "21:00-09:00"})
    assert settings.quiet_hours == parse_quiet_hours("21:00-09:00") == NIGHT


def test_bad_quiet_hours_flag_names_the_flag_and_the_rule() -> None:
    with pytest.raises(UsageError, match=r"--quiet-hours: invalid value '21-9': must be HH:MM"):
        build_parser().parse_args(["run", "--quiet-hours", "21-9"])


def test_quiet_hours_flag_overrides_the_setting() -> None:
    args = build_parser().parse_args(["run", "--quiet-hours", "22:30-07:00"])
    assert run_overrides(args)["quiet_hours"] == QuietHours(time(22, 30), time(7, 0))
