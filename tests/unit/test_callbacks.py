"""Our callback data and the customer a status is about (outbox.callbacks)."""

from __future__ import annotations

import pytest

from outbox.callbacks import Callback, callback_data, parse_callback, same_customer


def test_callback_data_round_trips_with_its_installation() -> None:
    text = callback_data("0a1b2c3d4e5f6071", 42, 3)
    assert text == "outbox:0a1b2c3d4e5f6071:42:3"
    assert parse_callback(text) == Callback("0a1b2c3d4e5f6071", 42, 3)


def test_the_old_form_has_no_installation() -> None:
    assert parse_callback("outbox:42:3") == Callback(None, 42, 3)


@pytest.mark.parametrize(
    "text", [None, 7, "", "order:42:3", "outbox:42", "outbox:SHORT:1:2", "outbox:a:b:c"]
)
def test_anything_else_is_not_ours(text: object) -> None:
    assert parse_callback(text) is None


def test_the_same_number_is_the_same_customer() -> None:
    assert same_customer("923001234567", "923001234567")


def test_another_number_is_another_customer() -> None:
    assert not same_customer("923001234567", "447700900000")


def test_a_brazilian_mobile_without_its_ninth_digit_is_the_same_customer() -> None:
    assert same_customer("5511987654321", "551187654321")


def test_a_mexican_mobile_without_its_one_is_the_same_customer() -> None:
    assert same_customer("5215512345678", "525512345678")


def test_one_digit_more_elsewhere_is_another_customer() -> None:
    assert not same_customer("4477009001234", "447700900123")


def test_an_argentinian_mobile_with_its_nine_is_the_same_customer() -> None:
    assert same_customer("5491123456789", "541123456789")
