"""Template messages: the only kind Meta delivers outside the 24-hour customer-service window.

`Template` is what apps pass to enqueue; `template_object()` checks it and builds the object
Meta takes (whatsapp-api.md 1.5), which is also what the `template` column stores, so that plain
SQL can insert templates in the same shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outbox.errors import InvalidMessage
from outbox.schema import TEMPLATE_CATEGORIES
from outbox.validation import check_storable, check_url

TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")
PARAMETER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")
MAX_PARAMETERS = 100
MAX_PARAMETER_LENGTH = 1024
MAX_COMPONENTS_BYTES = 64 * 1024


@dataclass(frozen=True)
class Template:
    """A template message. `body_params` is a sequence for positional {{1}} parameters or a
    mapping for named ones; `components`, when given, is sent to Meta as is."""

    name: str
    language: str
    body_params: Sequence[str] | Mapping[str, str] = ()
    header_image: str | None = None
    components: Sequence[Mapping[str, Any]] | None = None
    # Meta's category (marketing, utility, authentication): only marketing templates are
    # withheld from customers who opted out; None (unknown) is treated as marketing.
    category: str | None = None


def template_category(template: Template) -> str | None:
    """The template's category, checked: one of Meta's three, or None."""
    if template.category is None:
        return None
    if template.category not in TEMPLATE_CATEGORIES:
        raise InvalidMessage(
            "template.category",
            f"must be one of {', '.join(TEMPLATE_CATEGORIES)} (or None)",
            rule="choice",
        )
    return template.category


def template_object(template: object) -> dict[str, Any]:
    """The template as Meta's JSON object, or InvalidMessage naming the field and the rule."""
    if not isinstance(template, Template):
        raise InvalidMessage("template", "must be an outbox.Template", rule="type")
    if not isinstance(template.name, str) or not TEMPLATE_NAME.match(template.name):
        raise InvalidMessage(
            "template.name",
            "must be 1 to 512 lowercase letters, digits or underscores",
            rule="name_format",
        )
    if not isinstance(template.language, str) or not LANGUAGE_CODE.match(template.language):
        raise InvalidMessage(
            "template.language", "must be a language code like en or en_US", rule="language_format"
        )
    result: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.components is not None:
        if template.body_params or template.header_image is not None:
            raise InvalidMessage(
                "template.components",
                "replaces body_params and header_image; give one or the other",
                rule="exclusive",
            )
        result["components"] = _components(template.components)
        return result
    components = []
    if template.header_image is not None:
        link = check_url(template.header_image, "template.header_image")
        components.append(
            {"type": "header", "parameters": [{"type": "image", "image": {"link": link}}]}
        )
    parameters = _body_parameters(template.body_params)
    if parameters:
        components.append({"type": "body", "parameters": parameters})
    if components:
        result["components"] = components
    return result


def _body_parameters(params: object) -> list[dict[str, str]]:
    if isinstance(params, Mapping):
        items = list(params.items())
        named = True
    elif isinstance(params, Sequence) and not isinstance(params, str | bytes):
        items = [(None, value) for value in params]
        named = False
    else:
        raise InvalidMessage(
            "template.body_params",
            "must be a list of strings or a mapping of names to strings",
            rule="type",
        )
    if len(items) > MAX_PARAMETERS:
        raise InvalidMessage(
            "template.body_params", f"must have at most {MAX_PARAMETERS} items", rule="too_many"
        )
    parameters = []
    for index, (key, value) in enumerate(items):
        field = f"template.body_params[{key!r}]" if named else f"template.body_params[{index}]"
        if named and (not isinstance(key, str) or not PARAMETER_NAME.match(key)):
            raise InvalidMessage(
                field, "names must be lowercase letters, digits or underscores", rule="name_format"
            )
        if not isinstance(value, str) or not value.strip():
            raise InvalidMessage(field, "must be a non-empty string", rule="empty")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise InvalidMessage(
                field, f"must be at most {MAX_PARAMETER_LENGTH} characters", rule="too_long"
            )
        parameter = {"type": "text", "text": check_storable(value, field)}
        if named:
            assert isinstance(key, str)
            parameter["parameter_name"] = key
        parameters.append(parameter)
    return parameters


def _components(components: object) -> list[Any]:
    if isinstance(components, str | bytes) or not isinstance(components, Sequence):
        raise InvalidMessage(
            "template.components", "must be a list of component objects", rule="type"
        )
    if not all(isinstance(item, Mapping) for item in components):
        raise InvalidMessage(
            "template.components", "every component must be an object", rule="type"
        )
    try:
        text = json.dumps(list(components), ensure_ascii=False, allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(
            "template.components", f"must be plain JSON ({exc})", rule="json"
        ) from None
    check_storable(text, "template.components")
    if "\\u0000" in text:  # json.dumps escapes NUL; PostgreSQL's jsonb refuses the escape
        raise InvalidMessage(
            "template.components", "must not contain NUL characters (\\x00)", rule="nul_character"
        )
    if len(text.encode()) > MAX_COMPONENTS_BYTES:
        raise InvalidMessage(
            "template.components", f"must be at most {MAX_COMPONENTS_BYTES} bytes", rule="too_long"
        )
    parsed: list[Any] = json.loads(text)
    return parsed


def _refuse(value: object) -> None:
    raise TypeError(f"{type(value).__name__} is not JSON")
