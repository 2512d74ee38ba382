"""Fields shared by the API's schemas: safe strings, bounded JSON, and the target union."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from app import scheduling
from app.errors import InvalidSchedule, InvalidTemplate

# Compiles in the sandbox the workers render messages in, so a template that saves is
# one that compiles there.
from app.templating import compile_template

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
# The triggers.cron_expression column's size; /schedules/validate takes the same.
MAX_CRON_CHARS = 200
# What reads show in place of a webhook's header values and URL password.
REDACTED = "<redacted>"
PROJECT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TEMPLATE_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32


class Str(fields.String):
    """A string that PostgreSQL can store: no NUL character (text columns refuse it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("must not contain NUL characters")
        return text


class StrictBool(fields.Boolean):
    """A JSON true or false, nothing else ("yes", "1" and 1 are refused)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def utf8_max(limit: int) -> validate.Validator:
    """Return a validator that bounds a string's UTF-8 size to ``limit`` bytes."""

    def check(value: str) -> None:
        if len(value.encode("utf-8")) > limit:
            raise ValidationError(f"must be at most {limit} bytes")

    return check


def _depth(value: Any) -> int:
    # Iterative, so a hostile nesting cannot exhaust the interpreter's stack here.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, Mapping):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


class JsonValue(fields.Raw):
    """Any JSON value, at most 64 KiB once serialised and 32 levels deep."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if _depth(value) > MAX_JSON_DEPTH:
            raise ValidationError(f"must be at most {MAX_JSON_DEPTH} levels deep")
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValidationError(f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")
        return value


def check_timezone(value: str) -> None:
    """Validate an IANA zone name with the scheduling core."""
    try:
        scheduling.validate_timezone(value)
    except InvalidSchedule as exc:
        raise ValidationError(exc.message) from None


def check_template(value: str) -> None:
    """Compile a message template in the workers' sandbox; refuse one that fails there."""
    try:
        compile_template(value)
    except InvalidTemplate as exc:
        raise ValidationError(exc.message) from None


def check_cron(value: str) -> None:
    """Validate a cron expression with the scheduling core (the zone does not matter)."""
    try:
        scheduling.validate_schedule(value, "UTC")
    except InvalidSchedule as exc:
        raise ValidationError(exc.message) from None


class OneOfSchemas(fields.Field):
    """A union of object schemas told apart by their ``kind`` property.

    Documented as an OpenAPI ``oneOf`` with a discriminator (see :func:`one_of_to_openapi`).
    """

    def __init__(self, choices: Mapping[str, type[ma.Schema]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = dict(choices)

    def _schema(self, kind: Any) -> ma.Schema:
        if not isinstance(kind, str) or kind not in self.choices:
            raise ValidationError({"kind": [f"must be one of: {', '.join(self.choices)}"]})
        return self.choices[kind]()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object")
        return self._schema(value.get("kind")).load(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return self._schema(value["kind"]).dump(value)


def one_of_to_openapi(converter: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: document :class:`OneOfSchemas` as a ``oneOf``."""
    if not isinstance(field, OneOfSchemas):
        return {}
    refs = {kind: converter.resolve_nested_schema(schema) for kind, schema in field.choices.items()}
    return {
        "oneOf": list(refs.values()),
        "discriminator": {
            "propertyName": "kind",
            "mapping": {kind: ref["$ref"] for kind, ref in refs.items()},
        },
    }
