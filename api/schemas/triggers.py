"""What a client sends to create, change or sync triggers.

The schemas check each field and the rules that span fields, and turn the nested
``target`` into the trigger's columns. Whether ``run_at`` lies ahead and what
``next_run_at`` becomes are decided by :mod:`app.editing.triggers`, which knows the request's
``now`` and the stored trigger.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma
from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from api.schemas.common import ForceQuerySchema
from api.schemas.fields import (
    MAX_CRON_CHARS,
    MAX_TEMPLATE_BYTES,
    NAME_PATTERN,
    REDACTED,
    FullMatch,
    JsonArray,
    JsonObject,
    JsonValue,
    OneOfSchemas,
    Str,
    StrictBool,
    UtcDateTime,
    WebUrl,
    check_cron,
    check_template,
    check_timezone,
    utf8_max,
)
from api.state import state
from app.delivery.send import DEFAULT_TASK_QUEUE, RESERVED_HEADERS
from app.editing.definitions import KIND_COLUMNS, ONE_KIND
from app.enums import MisfirePolicy, OverlapPolicy
from app.limits import (
    BACKOFF_S,
    INTERVAL_S,
    MAX_ATTEMPTS,
    MAX_HEADER_VALUE_BYTES,
    MAX_HEADERS,
    MAX_SYNC_TRIGGERS,
    MISFIRE_GRACE_S,
    RUN_AT_LIMIT,
    TIMEOUT_S,
)
from app.schedule import scheduling
from app.targets import all_columns, target_of

METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_SECRET = re.compile(r"whsec_([A-Za-z0-9+/]+={0,2})")
_TASK_NAME = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$"
# Our own tasks and Celery's built-ins live under these names and queues; a tenant's
# task target must not be able to send them.
_RESERVED_TASK_PREFIXES = ("cronbeat.", "celery.")
_TEXT_LINE = r"^[^\x00-\x1f\x7f]{1,200}$"
# The shape of what the API accepts (the parser checks each field's values as well).
_CRON_ITEM = r"[0-9A-Za-z*/,#-]+"
CRON_PATTERN = (r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
                rf"{_CRON_ITEM}( {_CRON_ITEM}){{4}})$")


def _check_header_value(value: str) -> None:
    # What the HTTP client can send as is: Latin-1 (http.client encodes values so), no
    # control characters (CR and LF would split the header), and nothing it strips or
    # refuses at the edges.
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("must not contain control characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValidationError("must be Latin-1 text") from None
    if value != value.strip():
        raise ValidationError("must not start or end with whitespace")
    if value == REDACTED:
        raise ValidationError(f"{REDACTED} is what reads show: send the value itself")
    utf8_max(MAX_HEADER_VALUE_BYTES)(value)


def _check_headers(headers: dict[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"at most {MAX_HEADERS} headers")


def _check_header_name(name: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValidationError("must be an HTTP header name")
    if name.lower() in RESERVED_HEADERS:
        raise ValidationError("set by Cronbeat, not allowed")


def check_url_authority(url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise ValidationError("the port must be 1-65535")
    if not parts.hostname:
        raise ValidationError("must name a host")


def check_secret(value: str) -> None:
    match = _SECRET.fullmatch(value)
    try:
        raw = base64.b64decode(match.group(1), validate=True) if match else b""
    except binascii.Error:
        raw = b""
    if not 24 <= len(raw) <= 64:
        raise ValidationError("must be whsec_ followed by base64 of 24 to 64 bytes")


def _check_task_name(value: str) -> None:
    if value.lower().startswith(_RESERVED_TASK_PREFIXES):
        raise ValidationError("names starting with cronbeat. or celery. are reserved")


class WebhookTargetSchema(ma.Schema):
    """POST (or ``method``) a signed JSON body to ``url``."""

    kind = Str(required=True, validate=validate.OneOf(["webhook"]))
    url = WebUrl(
        required=True, schemes={"http", "https"}, require_tld=False,
        validate=[validate.Length(max=2048), check_url_authority],
        metadata={"format": "uri", "pattern": "^https?://[^/?#\\s]+",
                  "example": "https://example.com/hooks/report"},
    )
    method = Str(load_default="POST", validate=validate.OneOf(METHODS))
    headers = fields.Dict(
        keys=Str(validate=_check_header_name), values=Str(validate=_check_header_value),
        load_default=dict, validate=_check_headers,
        metadata={"description": f"At most {MAX_HEADERS}; values Latin-1, at most 1 KiB, no"
                  " control characters or surrounding whitespace. Reads show the names"
                  f" only, each value as {REDACTED}."},
    )
    signing_secret = Str(
        validate=check_secret,
        metadata={"description": "whsec_ + base64; generated when left out, shown once."},
    )


class TaskTargetSchema(ma.Schema):
    """``send_task`` a Celery task of your own code, on the same broker, with its own
    ``args`` and ``kwargs``; the occurrence's facts are in the message's ``cronbeat``
    header (``self.request.cronbeat`` in a bound task)."""

    kind = Str(required=True, validate=validate.OneOf(["task"]))
    task_name = Str(required=True, validate=[FullMatch(_TASK_NAME), _check_task_name])
    args = JsonArray(metadata={"description": "The task's positional arguments (default"
                               " none); at most 64 KiB of JSON."})
    kwargs = JsonObject(metadata={"description": "The task's keyword arguments (default"
                                  " none); at most 64 KiB of JSON."})
    envelope = StrictBool(
        allow_none=True, load_default=None,
        metadata={"description": "Call the task with one argument, the occurrence's"
                  " envelope (as a webhook's body), instead of args and kwargs. Left out:"
                  " a stored task trigger keeps its way unless args or kwargs are given"
                  " (those saved before arguments existed use the envelope); a new one"
                  " takes its arguments."})
    queue = Str(
        allow_none=True, load_default=None,
        validate=[FullMatch(_TASK_NAME), _check_task_name],
        metadata={"description": "One of the operator's queues (CRONBEAT_TASK_QUEUES); left"
                  f" out or null: {DEFAULT_TASK_QUEUE!r}, if the operator allows it."},
    )

    outcome = StrictBool(
        load_default=False,
        metadata={"description": "Wait for the task's own outcome (up to timeout_s, also"
                  " its time limit): the run ends as the task did, a failure is retried."
                  " Needs cronbeat.celery.install(app) in the worker that runs it; off,"
                  " a run succeeds once the broker has the message."})

    @validates_schema
    def _envelope_or_arguments(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("envelope") and ("args" in data or "kwargs" in data):
            message = "a task called with the envelope takes no args or kwargs"
            raise ValidationError({field: [message] for field in ("args", "kwargs")
                                   if field in data})

    @validates_schema
    def _queue_is_the_operators(self, data: dict[str, Any], **_: Any) -> None:
        # The names are the operator's configuration, so the message does not list them.
        allowed = state().settings.task_queues
        queue = data.get("queue")
        if queue is None and DEFAULT_TASK_QUEUE not in allowed:
            raise ValidationError({"queue": [
                f"required: the default queue {DEFAULT_TASK_QUEUE!r} is not one of the"
                " operator's queues"]})
        if queue is not None and queue not in allowed:
            raise ValidationError({"queue": ["must be one of the operator's queues"]})


TARGETS = {"webhook": WebhookTargetSchema, "task": TaskTargetSchema}


def target_columns(target: dict[str, Any]) -> dict[str, Any]:
    """Map a loaded target onto the trigger's columns (the other kinds' cleared)."""
    kind = target_of(target["kind"])
    cleared = {column: value for column, value in all_columns().items()
               if column not in kind.columns and column != "signing_secret"}
    return {**cleared, **kind.columns_of(target)}


def _run_at_utc(run_at: dt.datetime, timezone: str | None) -> dt.datetime:
    """A run_at in UTC: as given with an offset, or read in ``timezone`` by the fixed-time
    DST rule (a wall time in a gap is the transition instant; a repeated one the first).

    Raises:
        OverflowError: out of datetime's range.
    """
    if run_at.tzinfo is not None:
        return run_at.astimezone(dt.UTC)
    assert timezone is not None
    return scheduling.local_instant(run_at, scheduling.validate_timezone(timezone))


class TriggerFieldsSchema(ma.Schema):
    """The fields of a trigger definition, all optional (the base of create and patch)."""

    name = Str(validate=FullMatch(NAME_PATTERN),
               metadata={"description": "1-200 of A-Z a-z 0-9 . _ -; unique in the project."})
    description = Str(validate=validate.Length(max=2000))
    enabled = StrictBool()
    cron_expression = Str(
        validate=[validate.Length(min=1, max=MAX_CRON_CHARS), check_cron],
        metadata={"description": "Five fields or a macro; exactly one of this or run_at."
                                 " The pattern gives the shape; each field's values are"
                                 " checked too (minute 0-59, hour 0-23, day 1-31, month"
                                 " 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT).",
                  "pattern": CRON_PATTERN, "example": "30 2 * * 1-5"},
    )
    timezone = Str(validate=[validate.Length(min=1, max=64), check_timezone],
                   metadata={"description": "The IANA zone (tzdata's names, as"
                             " Europe/Berlin) the schedule is read and shown in; default"
                             " UTC. An unknown name is a 422 suggesting the closest ones.",
                             "pattern": r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$",
                             "example": "Europe/Berlin"})
    run_at = fields.DateTime(
        metadata={"description": "One-time trigger: an ISO 8601 instant in the future and"
                  " before 9000-01-01, with a UTC offset (or local to the given timezone)."},
    )
    interval_s = fields.Integer(
        strict=True, validate=validate.Range(*INTERVAL_S),
        metadata={"description": "Interval trigger: every this many seconds from start_at,"
                  " in absolute time (no drift, no DST effect). At least 1, or the"
                  " installation's CRONBEAT_MIN_INTERVAL_S."},
    )
    start_at = UtcDateTime(
        metadata={"description": "An interval's anchor: occurrences fall at start_at + k *"
                  " interval_s. A whole-second instant with a UTC offset; default: when"
                  " the interval is first saved (a sync that leaves it out keeps it)."},
    )
    target = OneOfSchemas(TARGETS)
    payload = JsonValue(metadata={"description": "Any JSON, at most 64 KiB."})
    message_template = Str(allow_none=True,
                           validate=[utf8_max(MAX_TEMPLATE_BYTES), check_template],
                           metadata={"description": "A logic-less Mustache subset ({{ payload.x }},"
                                                     " {{#list}}...{{/list}}), parsed when saved;"
                                                     " see README."})
    max_attempts = fields.Integer(strict=True, validate=validate.Range(*MAX_ATTEMPTS))
    backoff_base_s = fields.Integer(strict=True, validate=validate.Range(*BACKOFF_S))
    backoff_cap_s = fields.Integer(strict=True, validate=validate.Range(*BACKOFF_S))
    timeout_s = fields.Integer(strict=True, validate=validate.Range(*TIMEOUT_S))
    misfire_policy = fields.Enum(MisfirePolicy, by_value=True)
    misfire_grace_s = fields.Integer(strict=True, validate=validate.Range(*MISFIRE_GRACE_S))
    overlap_policy = fields.Enum(OverlapPolicy, by_value=True)
    ref = Str(allow_none=True, validate=FullMatch(_TEXT_LINE),
              metadata={"description": "A free label (a deploy, a repo); filter and bulk-delete"
                        " by it."})

    @validates_schema
    def _one_schedule_and_ordered_backoff(self, data: dict[str, Any], **_: Any) -> None:
        given = [kind for kind in KIND_COLUMNS if kind in data]
        if len(given) > 1:
            raise ValidationError({key: [ONE_KIND] for key in given})
        if "start_at" in data and given and given != ["interval_s"]:
            raise ValidationError({"start_at": ["is the anchor of an interval_s schedule"
                                                " only"]})
        if data.get("backoff_cap_s", BACKOFF_S[1]) < data.get("backoff_base_s", 0):
            raise ValidationError({"backoff_cap_s": ["must be at least backoff_base_s"]})

    @validates_schema
    def _interval_above_the_floor(self, data: dict[str, Any], **_: Any) -> None:
        floor_s = state().settings.min_interval_s
        if data.get("interval_s", floor_s) < floor_s:
            raise ValidationError({"interval_s": [
                f"must be at least {floor_s} seconds on this installation"
                " (CRONBEAT_MIN_INTERVAL_S)"]})

    @validates_schema
    def _run_at_has_a_zone(self, data: dict[str, Any], **_: Any) -> None:
        run_at = data.get("run_at")
        if run_at is None:
            return
        if run_at.tzinfo is None and "timezone" not in data:
            raise ValidationError(
                {"run_at": ["needs a UTC offset, or a timezone to read it in"]})
        try:
            utc = _run_at_utc(run_at, data.get("timezone"))
        except OverflowError:
            utc = dt.datetime.max.replace(tzinfo=dt.UTC)
        if utc >= RUN_AT_LIMIT:
            raise ValidationError(
                {"run_at": [f"must be before {RUN_AT_LIMIT.date().isoformat()}"]})

    @post_load
    def _to_columns(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        run_at = data.get("run_at")
        if run_at is not None:
            data["run_at"] = _run_at_utc(run_at, data.get("timezone"))
        target = data.pop("target", None)
        if target is not None:
            data.update(target_columns(target))
        return data


class TriggerCreateSchema(TriggerFieldsSchema):
    """A whole trigger definition: a name, one schedule and a target."""

    name = Str(required=True, validate=FullMatch(NAME_PATTERN),
               metadata={"description": "1-200 of A-Z a-z 0-9 . _ -; unique in the project."})
    target = OneOfSchemas(TARGETS, required=True)

    @validates_schema
    def _has_a_schedule(self, data: dict[str, Any], **_: Any) -> None:
        if not any(kind in data for kind in KIND_COLUMNS):
            raise ValidationError({key: [ONE_KIND] for key in KIND_COLUMNS})
        if "start_at" in data and "interval_s" not in data:
            raise ValidationError({"start_at": ["is the anchor of an interval_s schedule"
                                                " only"]})


class TriggerPatchSchema(TriggerFieldsSchema):
    """A partial update: only the fields given change. ``target`` is replaced as a whole."""


class TriggerSyncSchema(ma.Schema):
    """The project's complete set of triggers. Errors are keyed by the trigger's name."""

    triggers = fields.List(
        fields.Nested(TriggerCreateSchema), required=True,
        validate=validate.Length(max=MAX_SYNC_TRIGGERS),
    )

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        """Re-key the list's errors from positions to the triggers' names."""
        messages = error.messages
        items = data.get("triggers") if isinstance(data, Mapping) else None
        nested = messages.get("triggers") if isinstance(messages, dict) else None
        if not (isinstance(nested, dict) and isinstance(items, list)):
            raise error
        keyed: dict[Any, Any] = {}
        for position, message in nested.items():
            name = None
            if isinstance(position, int) and 0 <= position < len(items):
                item = items[position]
                name = item.get("name") if isinstance(item, Mapping) else None
            key = name if isinstance(name, str) and name and name not in keyed else position
            keyed[str(key)] = message
        raise ValidationError({**messages, "triggers": keyed}, data=data) from error


class SyncQuerySchema(ForceQuerySchema):
    dry_run = fields.Boolean(load_default=False, truthy={"true"}, falsy={"false"},
                             metadata={"description": "Report the changes, write nothing."})


class TriggerListQuerySchema(ma.Schema):
    enabled = fields.Boolean(truthy={"true"}, falsy={"false"})
    ref = Str(validate=FullMatch(_TEXT_LINE))
    name_prefix = Str(validate=validate.Length(min=1, max=200))
    cursor = Str(validate=validate.Length(max=200),
                 metadata={"description": "The `next` link's cursor."})
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class RefQuerySchema(ForceQuerySchema):
    ref = Str(required=True, validate=FullMatch(_TEXT_LINE))


class PreviewQuerySchema(ma.Schema):
    count = fields.Integer(load_default=10, validate=validate.Range(1, 100))
