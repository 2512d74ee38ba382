"""Checking a schedule without a trigger, for UIs and CI."""

from __future__ import annotations

from typing import Any

from api import auth
from api.parser import Blueprint
from api.schemas.common import ScheduleCheckResultSchema, ScheduleCheckSchema
from api.state import db_now, state
from app.errors import InvalidSchedule
from app.schedule import scheduling
from app.schedule.descriptions import describe_cron

PREVIEW_COUNT = 5

blp = Blueprint("schedules", __name__, url_prefix="/api/v1/schedules",
                description="Schedules on their own: validate and preview.")
blp.before_request(auth.require_tenant)


@blp.route("/validate", methods=["POST"])
@blp.arguments(ScheduleCheckSchema)
@blp.response(200, ScheduleCheckResultSchema)
def validate_schedule(body: dict[str, Any]) -> Any:
    """Is this expression valid in this zone, and when would it fire? An invalid
    schedule is still a 200, with `valid: false` and the reason in `error`."""
    with state().sessions.begin() as session:
        now = db_now(session)
    try:
        times = scheduling.next_run_times(body["cron_expression"], body["timezone"], now,
                                          PREVIEW_COUNT)
    except InvalidSchedule as exc:
        return {"valid": False, "error": exc.message, "description": None,
                "next_run_times": []}
    return {"valid": True, "error": None, "description": describe_cron(body["cron_expression"]),
            "next_run_times": [moment.isoformat() for moment in times]}
