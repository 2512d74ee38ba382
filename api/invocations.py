"""A project's invocations: histories, one invocation with its attempts, cancel, stats, backfill."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from api import auth
from api.pagination import decode_time_cursor, time_page
from api.parser import Blueprint
from api.presenters import invocation_view
from api.publishing import publish_after_commit
from api.schemas.views import (
    BackfillResultSchema,
    BackfillSchema,
    InvocationDetailSchema,
    InvocationListQuerySchema,
    InvocationPageSchema,
    ProjectInvocationQuerySchema,
    ReplayResultSchema,
    ReplaySchema,
    TriggerStatsQuerySchema,
    TriggerStatsSchema,
)
from api.state import state, transaction
from app.editing import backfill, invocations, replay

blp = Blueprint(
    "invocations", __name__, url_prefix="/api/v1/projects/<project_id>",
    description="Invocations: one per occurrence or manual run, with its attempts.",
)
blp.before_request(auth.require_tenant)


@blp.route("/triggers/<uuid:trigger_id>/invocations", methods=["GET"])
@blp.arguments(InvocationListQuerySchema, location="query")
@blp.response(200, InvocationPageSchema)
def list_invocations(query: dict[str, Any], project_id: str, trigger_id: uuid.UUID) -> Any:
    """A trigger's invocations, newest first (by scheduled_for), a page at a time."""
    limit = query["limit"]
    with state().sessions.begin() as session:
        rows = invocations.list_invocations(
            session, auth.tenant_id(), project_id, trigger_id, limit=limit + 1,
            status=query.get("status"), before=decode_time_cursor(query.get("cursor")),
        )
        return _page(rows, limit, query)


@blp.route("/invocations", methods=["GET"])
@blp.arguments(ProjectInvocationQuerySchema, location="query")
@blp.response(200, InvocationPageSchema)
def list_project_invocations(query: dict[str, Any], project_id: str) -> Any:
    """The project's invocations, newest first (by scheduled_for), deleted triggers' included.

    Filters: `status`, `trigger_id`, and `since` (inclusive) / `until` (exclusive) on
    `scheduled_for`. History older than the retention (CRONBEAT_HISTORY_RETENTION_DAYS)
    is gone; its counts stay in the trigger's `stats`.
    """
    limit = query["limit"]
    with state().sessions.begin() as session:
        rows = invocations.list_project_invocations(
            session, auth.tenant_id(), project_id, limit=limit + 1,
            status=query.get("status"), trigger_id=query.get("trigger_id"),
            since=query.get("since"), until=query.get("until"),
            before=decode_time_cursor(query.get("cursor")),
        )
        return _page(rows, limit, query)


@blp.route("/triggers/<uuid:trigger_id>/stats", methods=["GET"])
@blp.arguments(TriggerStatsQuerySchema, location="query")
@blp.response(200, TriggerStatsSchema)
def trigger_stats(query: dict[str, Any], project_id: str, trigger_id: uuid.UUID) -> Any:
    """A trigger's runs per UTC day: counts by status and start lateness (p50, p95).

    Days past the history's retention come from daily rollups, kept forever; recent
    days are counted from the history itself. Only days with runs are listed.
    """
    with transaction() as (session, now):
        today = now.date()
        days = invocations.trigger_stats(
            session, auth.tenant_id(), project_id, trigger_id, days=query["days"], today=today)
    return {
        "trigger_id": trigger_id,
        "first_day": today - dt.timedelta(days=query["days"] - 1),
        "last_day": today,
        "days": [{"day": d.day, "total": d.total, "counts": d.counts,
                  "lateness_p50_s": d.lateness_p50_s, "lateness_p95_s": d.lateness_p95_s}
                 for d in days],
    }


@blp.route("/triggers/<uuid:trigger_id>/backfill", methods=["POST"])
@blp.arguments(BackfillSchema)
@blp.response(200, BackfillResultSchema)
def backfill_trigger(body: dict[str, Any], project_id: str, trigger_id: uuid.UUID) -> Any:
    """Record the occurrences of a past range that have no invocation (they run now).

    Occurrences come from the schedule with its DST rules; one that has an invocation
    (it ran, was missed or was backfilled) is not recorded again. At most 1,000 a call;
    `capped_at` says where to go on. `from` must be within the history's retention.
    """
    with transaction() as (session, now):
        result = backfill.backfill(
            session, auth.tenant_id(), project_id, trigger_id, start=body["start"],
            end=body["end"], now=now, retention_days=state().settings.history_retention_days,
            dry_run=body["dry_run"])
    if result.created:
        publish_after_commit(result.created, now)
    return {"dry_run": body["dry_run"], "occurrences": result.missing,
            "already_recorded": result.recorded, "capped_at": result.capped_at,
            "invocation_ids": [key.id for key in result.created]}


def _page(rows: list[Any], limit: int, query: dict[str, Any]) -> dict[str, Any]:
    return time_page(rows, limit, query, at="scheduled_for", view=invocation_view)


@blp.route("/invocations/replay", methods=["POST"])
@blp.arguments(ReplaySchema)
@blp.response(200, ReplayResultSchema)
def replay_invocations(body: dict[str, Any], project_id: str) -> Any:
    """Run failed invocations again: one new manual invocation per original, once each.

    Each replay is linked to its original (`replay_of`), gets a new id (a new
    `webhook-id`) and delivers the original occurrence's time and the trigger's payload.
    An original already replayed is not replayed again; a dry run counts what would be.
    """
    with transaction() as (session, now):
        result = replay.replay_failed(
            session, auth.tenant_id(), project_id, now=now, limit=body["limit"],
            dry_run=body["dry_run"], trigger_ids=body.get("trigger_ids"),
            since=body.get("since"), until=body.get("until"))
    if result.created:
        publish_after_commit([key for _, key in result.created], now)
    return {"dry_run": body["dry_run"], "matched": result.matched,
            "replayed": [{"original_id": original, "invocation_id": key.id}
                         for original, key in result.created],
            "trigger_deleted": result.trigger_gone}


@blp.route("/invocations/<uuid:invocation_id>", methods=["GET"])
@blp.response(200, InvocationDetailSchema)
def get_invocation(project_id: str, invocation_id: uuid.UUID) -> Any:
    """One invocation with its delivery attempts."""
    with state().sessions.begin() as session:
        invocation, attempts = invocations.get_invocation(
            session, auth.tenant_id(), project_id, invocation_id)
        return invocation_view(invocation, attempts)


@blp.route("/invocations/<uuid:invocation_id>/cancel", methods=["POST"])
@blp.response(200, InvocationDetailSchema)
@blp.alt_response(409, description="The invocation already finished.")
def cancel_invocation(project_id: str, invocation_id: uuid.UUID) -> Any:
    """Cancel: a pending invocation is cancelled; a running one gets `cancel_requested`,
    honoured before its next attempt; a finished one is a 409."""
    with transaction() as (session, now):
        invocation = invocations.cancel_invocation(
            session, auth.tenant_id(), project_id, invocation_id, now=now)
        _, attempts = invocations.get_invocation(
            session, auth.tenant_id(), project_id, invocation.id)
        return invocation_view(invocation, attempts)
