"""Opaque cursors and ``next`` links for keyset pagination."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from flask import request, url_for
from webargs.flaskparser import abort

_BAD = "not a cursor from a next link"
_MAX_OFFSET = dt.timedelta(hours=16)


def encode_cursor(*parts: str) -> str:
    """Return an opaque cursor for the key of the last row of a page."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        parts = None
    if not (isinstance(parts, list) and len(parts) == size
            and all(isinstance(part, str) for part in parts)):
        abort(422, message="The request is invalid.", messages={"query": {"cursor": [_BAD]}})
    return parts


def decode_id_cursor(cursor: str | None) -> uuid.UUID | None:
    """Return the id a trigger cursor points after (422 naming ``cursor`` if malformed)."""
    if cursor is None:
        return None
    (text,) = _decode(cursor, 1)
    try:
        return uuid.UUID(text)
    except ValueError:
        abort(422, message="The request is invalid.", messages={"query": {"cursor": [_BAD]}})


def decode_time_cursor(cursor: str | None) -> tuple[dt.datetime, uuid.UUID] | None:
    """Return the (scheduled_for, id) an invocation cursor points before."""
    if cursor is None:
        return None
    when, ident = _decode(cursor, 2)
    try:
        moment = dt.datetime.fromisoformat(when)
        offset = moment.utcoffset()
        # PostgreSQL refuses offsets beyond +-15:59; we write cursors in UTC.
        if offset is None or abs(offset) >= _MAX_OFFSET:
            raise ValueError(when)
        return moment, uuid.UUID(ident)
    except ValueError:
        abort(422, message="The request is invalid.", messages={"query": {"cursor": [_BAD]}})


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def next_link(cursor: str | None, query: Mapping[str, Any]) -> str | None:
    """Return the next page's URL, or None on the last page.

    It is this path with ``query`` (the values the endpoint's query schema loaded) and
    ``cursor``. The raw query string never reaches ``url_for``: a client's parameter
    would otherwise collide with the path's (``project_id``) or with url_for's own
    (``_external``, ``_anchor``...).
    """
    if cursor is None:
        return None
    args = [(key, _query_text(value)) for key, value in query.items() if key != "cursor"]
    path = url_for(request.endpoint, **(request.view_args or {}))
    return f"{path}?{urlencode([*args, ('cursor', cursor)])}"


def time_page(rows: list[Any], limit: int, query: Mapping[str, Any], *, at: str,
              view: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A page of ``limit`` of ``rows`` (fetched ``limit + 1``, newest first by the
    attribute ``at``, then id), each shown by ``view``, with its ``next`` link."""
    cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        cursor = encode_cursor(getattr(last, at).isoformat(), str(last.id))
    return {"items": [view(row) for row in rows[:limit]], "next": next_link(cursor, query)}
