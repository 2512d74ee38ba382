"""The one place errors become HTTP answers, all of one shape.

``{"code": "not_found", "status": 404, "message": "...", "errors": {"field": ["..."]}}``

Domain errors (``app.errors`` and the editing core's) map to statuses in
:data:`DOMAIN_STATUSES`; HTTP errors raised by Flask, Werkzeug and webargs keep their
status. Nothing else reaches a client: an unexpected exception is a bare 500 whose log
line names only its type, because driver messages quote SQL parameters (which may
include a signing secret) and tracebacks quote code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import flask_smorest
from flask import Flask, request
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.exceptions import HTTPException

from api.schemas.common import ErrorSchema
from app.errors import (
    CodeManaged,
    Conflict,
    CronbeatError,
    InvalidSchedule,
    InvalidTrigger,
    NameTaken,
    NotFound,
    PermanentError,
    StaleVersion,
    TransientError,
)

log = logging.getLogger(__name__)

Answer = tuple[dict[str, Any], int, dict[str, str]]

# Checked in order: the first class an error is an instance of decides.
DOMAIN_STATUSES: tuple[tuple[type[CronbeatError], int], ...] = (
    (StaleVersion, 412),
    (NameTaken, 409),
    (InvalidTrigger, 422),
    (InvalidSchedule, 422),
    (NotFound, 404),
    (Conflict, 409),
    (PermanentError, 422),
    (TransientError, 503),
)
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}
MESSAGES = {
    401: "A valid API key is required (Authorization: Bearer <key>).",
    404: "Not found.",
    405: "The method is not allowed on this resource.",
    422: "The request is invalid.",
    500: "Internal error.",
}
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="cronbeat"'}


def error_answer(
    status: int,
    message: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> Answer:
    """Return the (payload, status, headers) of an error answer; ``code`` in place of the
    status's own (:data:`CODES`) where one status has causes a client tells apart."""
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", UNAUTHORIZED_HEADERS["WWW-Authenticate"])
    payload = {
        "code": code or CODES.get(status, "error"),
        "status": status,
        "message": message or MESSAGES.get(status, "The request failed."),
        "errors": dict(errors or {}),
    }
    return payload, status, extra


def _flatten(messages: Any) -> dict[str, Any]:
    # webargs nests field messages under the location ({"json": {...}, "query": {...}});
    # clients want the field names.
    if not isinstance(messages, Mapping):
        return {"body": messages}
    flat: dict[str, Any] = {}
    for location, fields in messages.items():
        if isinstance(fields, Mapping):
            flat.update(fields)
        else:
            flat[location] = fields
    return flat


def handle_http_exception(error: HTTPException) -> Answer:
    """Answer an HTTP error (abort, routing, webargs validation) in the one shape."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if status == 405:
        headers.update(
            (key, value) for key, value in error.get_headers() if key.lower() == "allow"
        )
    message = data.get("message")
    if message is None and status not in MESSAGES and status < 500:
        message = error.description
    errors = data.get("errors")
    if errors is None and "messages" in data:
        errors = _flatten(data["messages"])
    return error_answer(status, message, errors, headers)


def handle_domain_error(error: CronbeatError) -> Answer:
    """Translate a domain error to its status, naming the field where there is one."""
    status = next(code for kind, code in (*DOMAIN_STATUSES, (CronbeatError, 500))
                  if isinstance(error, kind))
    if status >= 500:
        log.error("domain error", extra={"action": "api.error", "error": type(error).__name__,
                                         "path": request.path})
        return error_answer(status)
    errors: dict[str, list[str]] = {}
    if isinstance(error, InvalidTrigger):
        errors = _nested(error.path, error.message)
    elif isinstance(error, NameTaken):
        errors = {"name": [error.message]}
    elif isinstance(error, CodeManaged):
        # {"managed_by": [owner]} for one trigger; by name for a sync or a bulk delete.
        errors = {"managed_by": list(error.owners.values())}
        if error.by_name:
            errors = {"triggers": {name: {"managed_by": [owner]}
                                   for name, owner in sorted(error.owners.items())}}
        return error_answer(status, error.message, errors, code="code_managed")
    return error_answer(status, error.message, errors)


def _nested(path: tuple[str, ...], message: str) -> dict[str, Any]:
    # ("triggers", "nightly", "run_at") -> {"triggers": {"nightly": {"run_at": [message]}}},
    # the shape marshmallow gives nested errors.
    result: Any = [message]
    for part in reversed(path):
        result = {part: result}
    return result


def handle_integrity_error(error: IntegrityError) -> Answer:
    """A constraint the validation missed: a conflict, told without the driver's words."""
    log.warning("integrity error", extra={"action": "api.integrity_error",
                                          "path": request.path})
    return error_answer(409, "The change conflicts with the stored data.")


def handle_unexpected(error: Exception) -> Answer:
    """Any other exception: 500, logged by type only (see the module doc)."""
    kind = "database" if isinstance(error, DBAPIError) else type(error).__name__
    log.error("unexpected error", extra={"action": "api.error", "error": kind,
                                         "method": request.method, "path": request.path})
    return error_answer(500)


class Api(flask_smorest.Api):
    """flask-smorest's Api, with our error shape documented and produced."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Answer:
        return handle_http_exception(error)


def init_app(app: Flask) -> None:
    """Register the handlers for errors that are not HTTP errors."""
    app.register_error_handler(CronbeatError, handle_domain_error)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(Exception, handle_unexpected)
