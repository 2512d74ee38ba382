"""What the API answers: triggers, invocations, pages, previews and sync reports.

Output fields that may be null say so (``allow_none``), so the OpenAPI document marks them
nullable and a client generated from it accepts every answer.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.schemas.fields import OneOfSchemas, Str, UtcDateTime
from app.enums import InvocationOrigin, InvocationStatus, MisfirePolicy, OverlapPolicy

_NULL = {"allow_none": True}


class WebhookTargetOutSchema(ma.Schema):
    kind = fields.String(validate=validate.OneOf(["webhook"]), required=True)
    url = fields.String(required=True,
                        metadata={"description": "A password in it shows as <redacted>."})
    method = fields.String(required=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                          metadata={"description": "The names; every value is <redacted>."})
    has_signing_secret = fields.Boolean(
        required=True,
        metadata={"description": "The secret itself is shown once, when it is created."},
    )


class TaskTargetOutSchema(ma.Schema):
    kind = fields.String(validate=validate.OneOf(["task"]), required=True)
    task_name = fields.String(required=True)
    queue = fields.String(required=True, **_NULL)
    args = fields.List(fields.Raw(), required=True,
                       metadata={"description": "The task's positional arguments."})
    kwargs = fields.Dict(keys=fields.String(), required=True,
                         metadata={"description": "The task's keyword arguments."})
    envelope = fields.Boolean(
        required=True, metadata={"description": "Called with one argument, the envelope,"
                                 " instead of args and kwargs."})
    outcome = fields.Boolean(
        required=True, metadata={"description": "A run waits for the task's own outcome."})


class LastInvocationSchema(ma.Schema):
    id = fields.UUID(required=True)
    status = fields.Enum(InvocationStatus, by_value=True, required=True)
    scheduled_for = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, **_NULL)
    manual = fields.Boolean(required=True)


class TriggerSchema(ma.Schema):
    id = fields.UUID(required=True)
    project_id = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    cron_expression = fields.String(required=True, **_NULL)
    timezone = fields.String(required=True)
    run_at = fields.DateTime(required=True, **_NULL)
    interval_s = fields.Integer(required=True, **_NULL)
    start_at = fields.DateTime(required=True, **_NULL)
    next_run_at = fields.DateTime(
        required=True, **_NULL,
        metadata={"description": "The next occurrence; null when disabled or finished."},
    )
    schedule_description = fields.String(
        required=True, metadata={"description": 'In words, such as "At 02:30 AM".'}
    )
    target = OneOfSchemas(
        {"webhook": WebhookTargetOutSchema, "task": TaskTargetOutSchema}, required=True
    )
    payload = fields.Raw(required=True, **_NULL)
    message_template = fields.String(required=True, **_NULL)
    max_attempts = fields.Integer(required=True)
    backoff_base_s = fields.Integer(required=True)
    backoff_cap_s = fields.Integer(required=True)
    timeout_s = fields.Integer(required=True)
    misfire_policy = fields.Enum(MisfirePolicy, by_value=True, required=True)
    misfire_grace_s = fields.Integer(required=True)
    effective_misfire_grace_s = fields.Integer(
        required=True, metadata={"description": "The grace the dispatcher applies:"
                                 " misfire_grace_s, but never below one tick + 30 s"
                                 " (CRONBEAT_TICK_SECONDS + 30), since a run is seen up to"
                                 " a tick after its instant."})
    overlap_policy = fields.Enum(OverlapPolicy, by_value=True, required=True)
    ref = fields.String(required=True, **_NULL)
    pause_note = fields.String(
        required=True, **_NULL,
        metadata={"description": "What the console's pause said; null when running, or"
                  " paused without a note (pausing through the API keeps none)."})
    version = fields.Integer(required=True, metadata={"description": "Also the ETag."})
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    last_invocation = fields.Nested(LastInvocationSchema, required=True, **_NULL)


class SavedTriggerSchema(TriggerSchema):
    signing_secret = fields.String(
        required=True, **_NULL,
        metadata={"description": "The webhook's signing secret, shown only in this answer"
                  " (on creation, or when a change generated a new one)."},
    )


class TriggerPageSchema(ma.Schema):
    items = fields.List(fields.Nested(TriggerSchema), required=True)
    next = fields.String(required=True, **_NULL,
                         metadata={"description": "The next page's URL; null on the last."})


class SyncResultSchema(ma.Schema):
    dry_run = fields.Boolean(required=True)
    created = fields.List(fields.String(), required=True)
    updated = fields.List(fields.String(), required=True)
    deleted = fields.List(fields.String(), required=True)
    unchanged = fields.List(fields.String(), required=True)
    signing_secrets = fields.Dict(
        keys=fields.String(), values=fields.String(), required=True,
        metadata={"description": "Secrets generated for new webhooks, by name; shown once."},
    )


class DeletedCountSchema(ma.Schema):
    deleted = fields.Integer(required=True)


class FireTimeSchema(ma.Schema):
    utc = fields.String(required=True)
    local = fields.String(required=True)


class PreviewSchema(ma.Schema):
    cron_expression = fields.String(required=True, **_NULL)
    run_at = fields.DateTime(required=True, **_NULL)
    interval_s = fields.Integer(required=True, **_NULL)
    start_at = fields.DateTime(required=True, **_NULL)
    timezone = fields.String(required=True)
    description = fields.String(required=True)
    next_run_times = fields.List(fields.Nested(FireTimeSchema), required=True)


class InvocationSchema(ma.Schema):
    id = fields.UUID(required=True)
    trigger_id = fields.UUID(
        required=True, **_NULL,
        metadata={"description": "The trigger's id, kept after the trigger is deleted (null"
                  " only for history recorded before that was so)."})
    project_id = fields.String(required=True)
    scheduled_for = fields.DateTime(required=True)
    status = fields.Enum(InvocationStatus, by_value=True, required=True)
    manual = fields.Boolean(required=True)
    origin = fields.Enum(
        InvocationOrigin, by_value=True, required=True,
        metadata={"description": "Why the run exists: `scheduled` (its schedule), `manual`"
                  " (run now), `backfill`, `replay`, or `missed` (a scheduled occurrence"
                  " recorded missed)."})
    replay_of = fields.UUID(required=True, **_NULL,
                            metadata={"description": "The failed invocation this replays."})
    attempt = fields.Integer(required=True)
    cancel_requested = fields.Boolean(required=True)
    enqueued_at = fields.DateTime(required=True, **_NULL)
    run_after = fields.DateTime(required=True, **_NULL)
    started_at = fields.DateTime(required=True, **_NULL)
    finished_at = fields.DateTime(required=True, **_NULL)
    last_error = fields.String(required=True, **_NULL)
    response_status = fields.Integer(required=True, **_NULL)
    created_at = fields.DateTime(required=True)


class AttemptSchema(ma.Schema):
    number = fields.Integer(required=True)
    deployment_id = fields.String(required=True, **_NULL)
    started_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, **_NULL)
    outcome = fields.String(required=True, **_NULL)
    response_status = fields.Integer(required=True, **_NULL)
    error = fields.String(required=True, **_NULL)


class InvocationDetailSchema(InvocationSchema):
    response_excerpt = fields.String(required=True, **_NULL)
    deployment_id = fields.String(required=True, **_NULL)
    attempts = fields.List(fields.Nested(AttemptSchema), required=True)


class InvocationPageSchema(ma.Schema):
    items = fields.List(fields.Nested(InvocationSchema), required=True)
    next = fields.String(required=True, **_NULL)


class InvocationListQuerySchema(ma.Schema):
    status = fields.Enum(InvocationStatus, by_value=True)
    cursor = Str(validate=validate.Length(max=200),
                 metadata={"description": "The `next` link's cursor."})
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class _TimeRange(ma.Schema):
    """``since`` (inclusive) and ``until`` (exclusive) on ``scheduled_for``, in order."""

    since = UtcDateTime(
        metadata={"description": "Only invocations scheduled at or after this instant."})
    until = UtcDateTime(
        metadata={"description": "Only invocations scheduled before this instant."})

    @ma.validates_schema
    def _ordered(self, data: dict[str, object], **_: object) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and not since < until:  # type: ignore[operator]
            raise ma.ValidationError("must be after since", "until")


class ProjectInvocationQuerySchema(InvocationListQuerySchema, _TimeRange):
    trigger_id = fields.UUID(metadata={"description": "Only this trigger's (deleted or not)."})


class TriggerStatsQuerySchema(ma.Schema):
    days = fields.Integer(
        load_default=30, validate=validate.Range(1, 3660),
        metadata={"description": "How many UTC days, ending today."})


class DayStatsSchema(ma.Schema):
    day = fields.Date(required=True, metadata={"description": "A UTC day of scheduled_for."})
    total = fields.Integer(required=True)
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "Invocations by status."})
    lateness_p50_s = fields.Float(
        required=True, **_NULL,
        metadata={"description": "Median start lateness (first attempt's start minus the"
                  " scheduled time), seconds; null if nothing started."})
    lateness_p95_s = fields.Float(required=True, **_NULL)


class TriggerStatsSchema(ma.Schema):
    trigger_id = fields.UUID(required=True)
    first_day = fields.Date(required=True)
    last_day = fields.Date(required=True)
    days = fields.List(fields.Nested(DayStatsSchema), required=True,
                       metadata={"description": "Days with runs, oldest first."})


class BackfillSchema(ma.Schema):
    start = UtcDateTime(required=True, data_key="from",
                                 metadata={"description": "The range's start (inclusive)."})
    end = UtcDateTime(required=True, data_key="to",
                               metadata={"description": "Its end (exclusive), not after now."})
    dry_run = fields.Boolean(load_default=False,
                             metadata={"description": "List the occurrences, record nothing."})


class BackfillResultSchema(ma.Schema):
    dry_run = fields.Boolean(required=True)
    occurrences = fields.List(
        fields.DateTime(), required=True,
        metadata={"description": "The occurrences without an invocation: recorded now, or"
                  " (dry run) that would be; at most 1,000 a call."})
    already_recorded = fields.Integer(
        required=True, metadata={"description": "Occurrences in the range that had one."})
    capped_at = fields.DateTime(
        required=True, **_NULL,
        metadata={"description": "Where the cap stopped: call again from here. Null when"
                  " the range is done."})
    invocation_ids = fields.List(fields.UUID(), required=True)


class ReplaySchema(_TimeRange):
    status = fields.String(
        load_default="failed", validate=validate.OneOf(["failed"]),
        metadata={"description": "Which invocations: only failed ones are replayed."})
    trigger_ids = fields.List(fields.UUID(), validate=validate.Length(max=100),
                              metadata={"description": "Only these triggers' (default: all)."})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500),
                           metadata={"description": "At most this many this call."})
    dry_run = fields.Boolean(load_default=False,
                             metadata={"description": "Count them, replay nothing."})


class ReplayedSchema(ma.Schema):
    original_id = fields.UUID(required=True)
    invocation_id = fields.UUID(required=True)


class ReplayResultSchema(ma.Schema):
    dry_run = fields.Boolean(required=True)
    matched = fields.Integer(
        required=True,
        metadata={"description": "Failed invocations in the selection not replayed before."})
    replayed = fields.List(fields.Nested(ReplayedSchema), required=True)
    trigger_deleted = fields.Integer(
        required=True, metadata={"description": "Originals skipped: their trigger is gone."})
