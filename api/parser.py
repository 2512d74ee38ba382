"""Request parsing that no body can crash: strict JSON, then marshmallow.

Python's ``json`` module accepts what PostgreSQL refuses (``NaN``, ``Infinity``, ``\\u0000``,
lone surrogates) and raises ``RecursionError`` on deep nesting. Each of those would
otherwise surface as a 500 at the database or in the parser; here they are a 400, with
the line and column where the JSON broke. A key given twice in one object is a 422
naming it (Python would keep the last one silently), and a body that is JSON but not an
object says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import flask
import flask_smorest
import marshmallow as ma
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

_BAD_JSON = "The body is not valid JSON."
_NOT_AN_OBJECT = "The body must be a JSON object."


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _storable(value: Any) -> bool:
    # Iterative walk: NUL characters and lone surrogates cannot be stored as text.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class SafeParser(FlaskParser):
    """webargs' Flask parser with a strict JSON decoder, refusing unknown query parameters.

    An unknown query parameter is a 422 naming it, as an unknown body field is: a typo
    (``?enable=false``) fails loudly instead of silently listing everything.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
                                   "query": ma.RAISE}

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        data = req.get_data(cache=True)
        if not data.strip():
            return core.missing
        try:
            value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                               parse_float=_finite, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            message = "is given more than once; give each key once"
            abort(422, message=f"The key {exc.key!r} is given more than once.",
                  messages={"json": {exc.key: [message]}})
        except json.JSONDecodeError as exc:
            # The position only, never the body's text: it may hold a secret.
            message = f"{_BAD_JSON} {exc.msg} at line {exc.lineno} column {exc.colno}."
            abort(400, message=message, messages={"body": [message]})
        except (ValueError, RecursionError):
            abort(400, message=_BAD_JSON, messages={"body": [_BAD_JSON]})
        if not _storable(value):
            message = "Strings must not contain NUL characters or lone surrogates."
            abort(400, message=message, messages={"body": [message]})
        if not isinstance(value, dict):
            abort(422, message=_NOT_AN_OBJECT, messages={"body": [_NOT_AN_OBJECT]})
        return value


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, parsing with :class:`SafeParser`."""

    ARGUMENTS_PARSER = SafeParser()
