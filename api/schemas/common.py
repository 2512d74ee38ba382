"""Schemas of the error payload, schedule validation, admin keys, health checks, and the
``force`` query parameter of the edits of code-managed triggers."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.schemas.fields import MAX_CRON_CHARS, FullMatch, Str
from app.editing.apikeys import KEY_NAME_PATTERN, TENANT_PATTERN


class ErrorSchema(ma.Schema):
    """Every 4xx and 5xx answer of the API has this shape."""

    code = fields.String(required=True,
                         metadata={"description": "Stable, such as not_found or validation_error."})
    status = fields.Integer(required=True, metadata={"description": "The HTTP status."})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(), values=fields.Raw(), required=True,
        metadata={"description": "Messages by field (nested for nested fields); may be empty."},
    )


class ScheduleCheckSchema(ma.Schema):
    # As long as a trigger's expression may be: one that validates here can be saved.
    cron_expression = Str(required=True, validate=validate.Length(max=MAX_CRON_CHARS))
    timezone = Str(load_default="UTC", validate=validate.Length(max=256))


class ScheduleCheckResultSchema(ma.Schema):
    valid = fields.Boolean(required=True)
    error = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    next_run_times = fields.List(
        fields.String(), required=True,
        metadata={"description": "The next 5 fire times, UTC, ISO 8601 (empty if invalid)."},
    )


class ApiKeyCreateSchema(ma.Schema):
    tenant_id = Str(required=True, validate=FullMatch(f"^{TENANT_PATTERN.pattern}$"))
    name = Str(required=True, validate=FullMatch(f"^{KEY_NAME_PATTERN.pattern}$"))


class ApiKeySchema(ma.Schema):
    id = fields.UUID(required=True)
    tenant_id = fields.String(required=True)
    name = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    revoked_at = fields.DateTime(required=True, allow_none=True)


class NewApiKeySchema(ApiKeySchema):
    key = fields.String(required=True,
                        metadata={"description": "The key itself, shown only in this answer."})


class HealthSchema(ma.Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))


class ForceQuerySchema(ma.Schema):
    force = fields.Boolean(
        load_default=False, truthy={"true"}, falsy={"false"},
        metadata={"description": "Change or delete code-managed triggers too (managed_by"
                  " set: cronbeat sync wrote them). Without it such a change is a 409,"
                  " code code_managed, naming the code; forced, they stay code-managed and"
                  " the next cronbeat sync puts the code's version back."})
