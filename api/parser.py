"""Request parsing that no body can crash: strict JSON, then marshmallow.

Python's ``json`` module accepts what PostgreSQL refuses (``NaN``, ``Infinity``, ``\\u0000``,
lone surrogates) and raises ``RecursionError`` on deep nesting. Each of those would
otherwise surface as a 500 at the database or in the parser; here they are a 400.
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
                               parse_float=_finite)
        except (ValueError, RecursionError):
            abort(400, message=_BAD_JSON, messages={"body": [_BAD_JSON]})
        if not _storable(value):
            message = "Strings must not contain NUL characters or lone surrogates."
            abort(400, message=message, messages={"body": [message]})
        return value


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, parsing with :class:`SafeParser`."""

    ARGUMENTS_PARSER = SafeParser()
