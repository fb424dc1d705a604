"""Reading the portfolio's messaging limit as Meta and operators write it (issue 16, point 4)."""

from __future__ import annotations

import pytest

from outbox.arguments import UsageError, build_parser, run_overrides
from outbox.errors import ConfigurationError
from outbox.policy.tier import DailyLimit, is_marketing, parse_daily_limit, read_limit
from outbox.settings import Settings


@pytest.mark.parametrize(
    ("written", "customers"),
    [
        ("TIER_50", 50),
        ("TIER_250", 250),
        ("TIER_1K", 1000),
        ("TIER_2K", 2000),
        ("TIER_10K", 10000),
        ("TIER_100K", 100000),
        ("250", 250),
        ("2,000", 2000),
        ("10k", 10000),
        (100000, 100000),
    ],
)
def test_meta_tiers_and_numbers_read_as_their_number_of_customers(
    written: object, customers: int
) -> None:
    assert read_limit(written) == DailyLimit(customers)


@pytest.mark.parametrize("written", ["TIER_UNLIMITED", "unlimited", "Unlimited"])
def test_unlimited_reads_as_no_number(written: str) -> None:
    assert read_limit(written) == DailyLimit(None)


@pytest.mark.parametrize("written", ["TIER_NOT_SET", "", "0", "-5", "TIER_", "lots", None, True, 0])
def test_what_is_not_a_limit_teaches_nothing(written: object) -> None:
    assert read_limit(written) is None


def test_a_bad_daily_limit_names_the_variable_and_the_rule() -> None:
    with pytest.raises(ConfigurationError, match="OUTBOX_DAILY_LIMIT: 'many' must be a positive"):
        Settings.from_env({"OUTBOX_DAILY_LIMIT": "many"})


def test_the_daily_limit_comes_from_the_environment() -> None:
    assert Settings.from_env({"OUTBOX_DAILY_LIMIT": "2K"}).daily_limit == DailyLimit(2000)
    assert Settings.from_env({}).daily_limit is None


def test_parse_daily_limit_names_the_flag() -> None:
    with pytest.raises(ConfigurationError, match="daily-limit: 'x'"):
        parse_daily_limit("x")


def test_templates_of_unknown_category_count_as_marketing() -> None:
    assert is_marketing(None)
    assert is_marketing("marketing")
    assert not is_marketing("utility")
    assert not is_marketing("authentication")


def test_outbox_run_takes_the_daily_limit_as_a_flag() -> None:
    args = build_parser().parse_args(["run", "--daily-limit", "TIER_2K"])
    assert run_overrides(args)["daily_limit"] == DailyLimit(2000)


def test_a_bad_daily_limit_flag_is_a_usage_error_naming_the_rule() -> None:
    with pytest.raises(UsageError, match="--daily-limit: invalid value '-3': must be a positive"):
        build_parser().parse_args(["run", "--daily-limit", "-3"])
