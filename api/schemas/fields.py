"""Fields shared by the API's schemas: safe strings, bounded JSON, and the target union."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator, Mapping
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

# Parses as the workers parse it, so a template that saves is one they can render.
from app.delivery.templating import compile_template
from app.errors import InvalidSchedule, InvalidTemplate
from app.limits import (  # noqa: F401 - re-exported for the schemas
    MAX_CRON_CHARS,
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_TEMPLATE_BYTES,
)
from app.schedule import scheduling
from app.targets import webhook


class UtcDateTime(fields.AwareDateTime):
    """An instant with a UTC offset, loaded as UTC: PostgreSQL refuses offsets beyond
    +-15:59 that ISO 8601 allows, so none reaches SQL. One outside datetime's range
    once in UTC is a 422 naming the field."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError("is out of range once in UTC") from None


class WebUrl(fields.Url):
    """An http(s) URL. One without the scheme (``example.com/hook``) is told exactly
    that, rather than marshmallow's "Not a valid URL." beside a host check."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and not value[:8].lower().startswith(("http://", "https://")):
            raise ValidationError("must start with http:// or https://")
        return super()._deserialize(value, attr, data, **kwargs)


NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
# What reads show in place of a webhook's header values and URL password.
REDACTED = webhook.REDACTED
# Not "." or "..": as a path segment they would resolve away in links and URLs.
PROJECT_ID_PATTERN = r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,64}$"
PROJECT_ID_RULE = "must be 1-64 of A-Z a-z 0-9 . _ -, and not . or .."


class Str(fields.String):
    """A string that PostgreSQL can store: no NUL character (text columns refuse it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("must not contain NUL characters")
        return text


class FullMatch(validate.Regexp):
    """A Regexp validator that must match the whole string.

    ``re.match`` with a pattern ending in ``$`` also accepts a trailing newline
    (``"t1\\n"``); ``fullmatch`` does not. The pattern stays an ECMA-262 one, so the
    OpenAPI document shows it as it is.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


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


def _floats(value: Any) -> Iterator[float]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def stored_json_bytes(value: Any) -> int:
    """The size of ``value`` as it is stored and served back, not as it was typed.

    JSONB keeps a number as ``numeric`` and prints it in positional notation, so
    ``1e308`` (6 characters in the request) comes back as a 309-digit integer: each
    float counts with the length of that text.
    """
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    for number in _floats(value):
        typed = repr(number)
        size += len(format(decimal.Decimal(typed), "f")) - len(typed)
    return size


class JsonValue(fields.Raw):
    """Any JSON value but null, at most 64 KiB as stored (:func:`stored_json_bytes`), 32 deep.

    Documented as any of the five non-null JSON types, so the document does not promise
    that ``null`` is accepted.
    """

    #: The JSON types it takes, as the document shows them; None: any but null.
    json_type: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        shape = ({"type": self.json_type} if self.json_type is not None else
                 {"anyOf": [{"type": kind, **({"items": {}} if kind == "array" else {})}
                            for kind in ("object", "array", "string", "number", "boolean")]})
        if self.json_type == "array":
            shape["items"] = {}
        super().__init__(metadata={**shape, **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if self.json_type == "array" and not isinstance(value, list):
            raise ValidationError("must be a JSON array")
        if self.json_type == "object" and not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        if _depth(value) > MAX_JSON_DEPTH:
            raise ValidationError(f"must be at most {MAX_JSON_DEPTH} levels deep")
        if stored_json_bytes(value) > MAX_PAYLOAD_BYTES:
            raise ValidationError(
                f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON as stored (a number is "
                "stored in positional notation: 1e308 takes 309 bytes)")
        return value


class JsonArray(JsonValue):
    """A JSON array, bounded as :class:`JsonValue`."""

    json_type = "array"


class JsonObject(JsonValue):
    """A JSON object, bounded as :class:`JsonValue`."""

    json_type = "object"


def check_timezone(value: str) -> None:
    """Validate an IANA zone name with the scheduling core."""
    try:
        scheduling.validate_timezone(value)
    except InvalidSchedule as exc:
        raise ValidationError(exc.message) from None


def check_template(value: str) -> None:
    """Parse a message template as the workers do; refuse one that does not parse."""
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
