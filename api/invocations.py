"""A project's invocations: a trigger's history, one invocation with its attempts, cancel."""

from __future__ import annotations

import uuid
from typing import Any

from api import auth
from api.pagination import decode_time_cursor, encode_cursor, next_link
from api.parser import Blueprint
from api.presenters import invocation_view
from api.schemas.views import (
    InvocationDetailSchema,
    InvocationListQuerySchema,
    InvocationPageSchema,
)
from api.state import state, transaction
from app.editing import invocations

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
        page = rows[:limit]
        items = [invocation_view(row) for row in page]
    cursor = None
    if len(rows) > limit:
        cursor = encode_cursor(page[-1].scheduled_for.isoformat(), str(page[-1].id))
    return {"items": items, "next": next_link(cursor, query)}


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
