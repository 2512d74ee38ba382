"""What a client sends and reads for alerts: channels, rules and the alert history."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from api.schemas.fields import NAME_PATTERN, FullMatch, Str, StrictBool, WebUrl
from api.schemas.triggers import check_secret, check_url_authority
from app.alerting.rules import DEFAULT_RULE, AlertKind

_NULL = {"allow_none": True}
STATUSES = ("pending", "delivered", "failed")
_URL_FIELD: dict[str, Any] = {
    "schemes": {"http", "https"}, "require_tld": False,
    "validate": [validate.Length(max=2048), check_url_authority],
    "metadata": {"format": "uri", "pattern": "^https?://[^/?#\\s]+",
                 "example": "https://example.com/hooks/cronbeat-alerts"},
}
_SECRET = {"description": "whsec_ + base64 of 24-64 bytes; generated when left out. Shown"
           " once, in the answer that sets it."}


class ChannelCreateSchema(ma.Schema):
    name = Str(required=True, validate=FullMatch(NAME_PATTERN))
    url = WebUrl(required=True, **_URL_FIELD)
    signing_secret = Str(validate=check_secret, metadata=_SECRET)
    enabled = StrictBool(load_default=True)


class ChannelPatchSchema(ma.Schema):
    name = Str(validate=FullMatch(NAME_PATTERN))
    url = WebUrl(**_URL_FIELD)
    signing_secret = Str(validate=check_secret, metadata=_SECRET)
    rotate_secret = StrictBool(
        load_default=False,
        metadata={"description": "Generate a new signing secret (shown in this answer)."})
    enabled = StrictBool()

    @ma.validates_schema
    def _one_secret(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("rotate_secret") and "signing_secret" in data:
            raise ma.ValidationError("give signing_secret or rotate_secret, not both",
                                     "rotate_secret")


class ChannelSchema(ma.Schema):
    id = fields.UUID(required=True)
    project_id = fields.String(required=True)
    name = fields.String(required=True)
    url = fields.String(required=True,
                        metadata={"description": "A password in it shows as <redacted>."})
    enabled = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    signing_secret = fields.String(
        required=True, **_NULL,
        metadata={"description": "Only in the answer that created or changed it; else null."})


class ChannelListSchema(ma.Schema):
    items = fields.List(fields.Nested(ChannelSchema), required=True)


class RuleSchema(ma.Schema):
    """When a trigger's alerts go out; every field has its default when left out."""

    on_failure = StrictBool(load_default=DEFAULT_RULE.on_failure,
                            metadata={"description": "Alert when scheduled runs fail."})
    failures_in_a_row = fields.Integer(
        load_default=DEFAULT_RULE.failures_in_a_row, validate=validate.Range(1, 1000),
        metadata={"description": "Alert once this many scheduled runs in a row failed."})
    on_missed = StrictBool(load_default=DEFAULT_RULE.on_missed,
                           metadata={"description": "Alert when a run is recorded missed."})
    late_after_s = fields.Integer(
        load_default=DEFAULT_RULE.late_after_s, validate=validate.Range(1, 86_400), **_NULL,
        metadata={"description": "Alert when a run's first attempt starts more than this"
                  " many seconds after its time; null: off."})
    on_recovery = StrictBool(
        load_default=DEFAULT_RULE.on_recovery,
        metadata={"description": "Alert once at the first success after an alert."})
    on_didnt_run = StrictBool(
        load_default=DEFAULT_RULE.on_didnt_run,
        metadata={"description": "Alert when an occurrence did not run within the"
                  " trigger's misfire grace (dispatcher or workers down)."})


class RuleInForceSchema(RuleSchema):
    source = fields.String(
        required=True, validate=validate.OneOf(["trigger", "project", "default"]),
        metadata={"description": "The trigger's own rule, the project's default, or the"
                  " built-in default."})


class AlertSchema(ma.Schema):
    id = fields.UUID(required=True)
    channel_id = fields.UUID(required=True)
    trigger_id = fields.UUID(required=True, **_NULL)
    invocation_id = fields.UUID(required=True, **_NULL)
    kind = fields.String(required=True, validate=validate.OneOf([k.value for k in AlertKind]))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, **_NULL)
    response_status = fields.Integer(required=True, **_NULL)
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, **_NULL)
    body = fields.Dict(required=True, metadata={"description": "The JSON body delivered."})


class AlertPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AlertSchema), required=True)
    next = fields.String(required=True, **_NULL)


class AlertListQuerySchema(ma.Schema):
    trigger_id = fields.UUID()
    kind = fields.String(validate=validate.OneOf([k.value for k in AlertKind]))
    status = fields.String(validate=validate.OneOf(STATUSES))
    cursor = Str(validate=validate.Length(max=200),
                 metadata={"description": "The `next` link's cursor."})
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
