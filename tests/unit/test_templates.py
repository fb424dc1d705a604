"""Template messages: the object Meta takes, built from outbox.Template, and its rules."""

from __future__ import annotations

import pytest

from outbox import InvalidMessage, Template
from outbox.templates import template_object
from outbox.validation import validate
from outbox.whatsapp import parts_of, payload

PHOTO = "https://cdn.example.com/room.jpg"


def test_positional_parameters_and_a_header_image_build_meta_components() -> None:
    template = Template("booking_confirmed", "en_US", ("Ali", "12 May"), header_image=PHOTO)
    assert template_object(template) == {
        "name": "booking_confirmed",
        "language": {"code": "en_US"},
        "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": PHOTO}}]},
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ali"}, {"type": "text", "text": "12 May"}],
            },
        ],
    }


def test_named_parameters_carry_their_names() -> None:
    template = Template("welcome", "en", {"first_name": "Ali"})
    assert template_object(template)["components"] == [
        {
            "type": "body",
            "parameters": [{"type": "text", "text": "Ali", "parameter_name": "first_name"}],
        }
    ]


def test_a_template_without_parameters_has_no_components() -> None:
    assert template_object(Template("hello_world", "en_US")) == {
        "name": "hello_world",
        "language": {"code": "en_US"},
    }


def test_components_are_sent_as_given() -> None:
    components = [{"type": "button", "sub_type": "url", "index": "0", "parameters": []}]
    assert template_object(Template("t", "en", components=components))["components"] == components


def test_the_template_part_sends_the_object_as_is() -> None:
    template = template_object(Template("hello_world", "en_US"))
    [part] = parts_of(None, [], template)
    body = payload("923001234567", part, "outbox:1:0")
    assert (body["type"], body["template"]) == ("template", template)


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (Template("Hello World", "en_US"), "template.name"),
        (Template("", "en_US"), "template.name"),
        (Template("ok", "english"), "template.language"),
        (Template("ok", "en_US", ("",)), "template.body_params[0]"),
        (Template("ok", "en_US", ("a\x00",)), "template.body_params[0]"),
        (Template("ok", "en_US", "Ali"), "template.body_params"),  # a string, not a list
        (Template("ok", "en_US", {"First Name": "Ali"}), "template.body_params['First Name']"),
        (Template("ok", "en_US", header_image="ftp://x/y.jpg"), "template.header_image"),
        (Template("ok", "en_US", ("x",), components=[]), "template.components"),
        (Template("ok", "en_US", components=[{"text": "\x00"}]), "template.components"),
        (Template("ok", "en_US", components=[{"n": float("nan")}]), "template.components"),
        (Template("ok", "en_US", components=["body"]), "template.components"),  # type: ignore[list-item]
    ],
)
def test_a_bad_template_is_refused_naming_the_field(template: Template, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        template_object(template)
    assert caught.value.field == field


def test_a_template_takes_no_text_and_no_media() -> None:
    template = template_object(Template("hello_world", "en_US"))
    with pytest.raises(InvalidMessage) as caught:
        validate("923001234567", "hi", template_json=template)
    assert caught.value.field == "template"
    with pytest.raises(InvalidMessage):
        validate("923001234567", media_urls={"images": [PHOTO]}, template_json=template)


def test_a_template_alone_is_a_message() -> None:
    template = template_object(Template("hello_world", "en_US"))
    new = validate("923001234567", template_json=template)
    assert (new.message, new.media, new.template) == (None, [], template)
