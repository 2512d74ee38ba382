"""Triggers of a project: CRUD, declarative sync, run now, pause/resume and preview.

Each request opens one transaction and reads the database's clock once, in it
(:func:`api.state.transaction`); a run's message is published only after that
transaction committed.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import request
from flask.views import MethodView

from api import auth
from api.pagination import decode_id_cursor, encode_cursor, next_link
from api.parser import Blueprint
from api.presenters import invocation_view, preview_view, trigger_view
from api.publishing import held_next_run, publish_after_commit, tick_if_due_soon
from api.schemas.common import ForceQuerySchema
from api.schemas.triggers import (
    PreviewQuerySchema,
    RefQuerySchema,
    SyncQuerySchema,
    TriggerCreateSchema,
    TriggerListQuerySchema,
    TriggerPatchSchema,
    TriggerSyncSchema,
)
from api.schemas.views import (
    DeletedCountSchema,
    InvocationSchema,
    PreviewSchema,
    SavedTriggerSchema,
    SyncResultSchema,
    TriggerPageSchema,
    TriggerSchema,
)
from api.state import state, transaction
from app.editing import manual, sync, triggers
from app.editing.invocations import last_invocations
from app.errors import StaleVersion
from app.models import InvocationKey, Trigger

log = logging.getLogger(__name__)

blp = Blueprint(
    "triggers", __name__, url_prefix="/api/v1/projects/<project_id>/triggers",
    description="Triggers: a schedule and the target each occurrence is delivered to.",
)
blp.before_request(auth.require_tenant)

ETAG = {"ETag": {"description": "The trigger's version, quoted.", "schema": {"type": "string"}}}
CODE_MANAGED = "The trigger is code-managed (cronbeat sync): code code_managed, naming the code."
IF_MATCH = {
    "in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
    "description": 'The ETag read earlier (such as "3"); a stale one gets 412.',
}


# Versions are written without leading zeros, so this is the exact-string comparison:
# "01" is not the ETag "1" (RFC 9110 compares entity tags character by character).
_STRONG_ETAG = re.compile(r'"([1-9][0-9]{0,8})"')


def _etag(trigger: Trigger) -> dict[str, str]:
    return {"ETag": f'"{trigger.version}"'}


#: What a malformed If-Match is told (412: it matches nothing).
IF_MATCH_FORM = ('If-Match must be the ETag as the ETag header gives it, a version in'
                 ' double quotes such as "5", or *')


def expected_version() -> int | None:
    """Parse If-Match: None when absent or ``*``, else the version.

    Only one strong ETag can match (RFC 9110 compares If-Match strongly).

    Raises:
        StaleVersion: it is no ETag of ours (it matches nothing); the message says the form.
    """
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    match = _STRONG_ETAG.fullmatch(raw.strip())
    if match:
        return int(match.group(1))
    raise StaleVersion(IF_MATCH_FORM)


def _view(session: Any, trigger: Trigger, secret: str | None = None) -> dict[str, Any]:
    last = last_invocations(session, auth.tenant_id(), [trigger.id]).get(trigger.id)
    return trigger_view(trigger, last, signing_secret=secret)


@blp.route("")
class TriggerCollection(MethodView):
    @blp.arguments(TriggerListQuerySchema, location="query")
    @blp.response(200, TriggerPageSchema)
    def get(self, query: dict[str, Any], project_id: str) -> dict[str, Any]:
        """List the project's triggers, by id, a page at a time (filters: enabled, ref,
        name_prefix)."""
        limit = query["limit"]
        with state().sessions.begin() as session:
            rows = triggers.list_triggers(
                session, auth.tenant_id(), project_id, limit=limit + 1,
                enabled=query.get("enabled"), ref=query.get("ref"),
                name_prefix=query.get("name_prefix"),
                after_id=decode_id_cursor(query.get("cursor")),
            )
            page = rows[:limit]
            last = last_invocations(session, auth.tenant_id(), [t.id for t in page])
            items = [trigger_view(t, last.get(t.id)) for t in page]
        cursor = encode_cursor(str(page[-1].id)) if len(rows) > limit else None
        return {"items": items, "next": next_link(cursor, query)}

    @blp.arguments(TriggerCreateSchema)
    @blp.response(201, SavedTriggerSchema, headers=ETAG)
    @blp.alt_response(409, description="A trigger of that name exists.")
    def post(self, values: dict[str, Any], project_id: str) -> Any:
        """Create a trigger. A webhook's signing secret is in this answer only."""
        with transaction() as (session, now):
            trigger = triggers.create_trigger(session, auth.tenant_id(), project_id, values,
                                              now=now)
            view = trigger_view(trigger, None, signing_secret=trigger.signing_secret)
        tick_if_due_soon([held_next_run(trigger)], now)
        log.info("trigger created", extra={"action": "trigger.create",
                                           "tenant_id": auth.tenant_id(),
                                           "project_id": project_id, "trigger_id": trigger.id})
        return view, 201, _etag(trigger)

    @blp.arguments(SyncQuerySchema, location="query")
    @blp.arguments(TriggerSyncSchema)
    @blp.response(200, SyncResultSchema)
    @blp.alt_response(409, description="It would change or delete code-managed triggers"
                      " (code code_managed, errors by name); force=true does it anyway.")
    def put(self, query: dict[str, Any], body: dict[str, Any], project_id: str) -> Any:
        """Sync: make the project's triggers exactly this set, by name, in one transaction.

        New names are created, changed ones updated, identical ones left alone and the
        rest deleted. With `dry_run=true` the same report comes back and nothing is
        written. Changing or deleting a code-managed trigger (other than pausing or
        resuming it) needs `force=true`."""
        with transaction() as (session, now):
            result = sync.sync_triggers(session, auth.tenant_id(), project_id,
                                        body["triggers"], now=now, dry_run=query["dry_run"],
                                        force=query["force"])
        if not query["dry_run"]:
            tick_if_due_soon([held_next_run(row) for row in result.saved], now)
        return {"dry_run": query["dry_run"], "created": result.created,
                "updated": result.updated, "deleted": result.deleted,
                "unchanged": result.unchanged, "signing_secrets": result.signing_secrets}

    @blp.arguments(RefQuerySchema, location="query")
    @blp.response(200, DeletedCountSchema)
    @blp.alt_response(409, description="Some are code-managed (code code_managed, errors"
                      " by name); force=true deletes them anyway.")
    def delete(self, query: dict[str, Any], project_id: str) -> Any:
        """Delete every trigger of the project carrying `ref` (code-managed ones only with
        `force=true`)."""
        with transaction() as (session, now):
            count = triggers.delete_triggers_by_ref(session, auth.tenant_id(), project_id,
                                                    query["ref"], now=now,
                                                    force=query["force"])
        return {"deleted": count}


@blp.route("/<uuid:trigger_id>")
class TriggerItem(MethodView):
    @blp.response(200, TriggerSchema, headers=ETAG)
    def get(self, project_id: str, trigger_id: uuid.UUID) -> Any:
        """Read a trigger; its ETag is its version."""
        with state().sessions.begin() as session:
            trigger = triggers.get_trigger(session, auth.tenant_id(), project_id, trigger_id)
            return _view(session, trigger), 200, _etag(trigger)

    @blp.arguments(ForceQuerySchema, location="query")
    @blp.arguments(TriggerPatchSchema)
    @blp.response(200, SavedTriggerSchema, headers=ETAG)
    @blp.alt_response(409, description=CODE_MANAGED)
    @blp.alt_response(412, description="If-Match names an older version.")
    @blp.doc(parameters=[IF_MATCH])
    def patch(self, query: dict[str, Any], changes: dict[str, Any], project_id: str,
              trigger_id: uuid.UUID) -> Any:
        """Change some fields. `enabled: false` pauses (pending scheduled runs are
        cancelled, manual ones are not), `enabled: true` resumes from now. A due occurrence
        that a schedule change or a pause takes away is recorded `missed`. Send If-Match
        to refuse a lost update. A code-managed trigger may be paused and resumed; any
        other change needs `force=true`."""
        with transaction() as (session, now):
            trigger, secret = triggers.update_trigger(
                session, auth.tenant_id(), project_id, trigger_id, changes, now=now,
                expected_version=expected_version(), force=query["force"],
            )
            view = _view(session, trigger, secret)
        tick_if_due_soon([held_next_run(trigger)], now)
        return view, 200, _etag(trigger)

    @blp.arguments(ForceQuerySchema, location="query")
    @blp.response(204)
    @blp.alt_response(409, description=CODE_MANAGED)
    @blp.alt_response(412, description="If-Match names an older version.")
    @blp.doc(parameters=[IF_MATCH])
    def delete(self, query: dict[str, Any], project_id: str, trigger_id: uuid.UUID) -> None:
        """Delete a trigger; its pending runs are cancelled, its history stays. A
        code-managed one needs `force=true`."""
        with transaction() as (session, now):
            triggers.delete_trigger(session, auth.tenant_id(), project_id, trigger_id,
                                    now=now, expected_version=expected_version(),
                                    force=query["force"])


@blp.route("/<uuid:trigger_id>/pause", methods=["POST"])
@blp.response(200, SavedTriggerSchema, headers=ETAG)
@blp.alt_response(412, description="If-Match names an older version.")
@blp.doc(parameters=[IF_MATCH])
def pause(project_id: str, trigger_id: uuid.UUID) -> Any:
    """Pause: same as PATCH `{"enabled": false}`, and clears a note the console kept. A
    code-managed trigger may be paused: `cronbeat sync` leaves it paused."""
    with transaction() as (session, now):
        trigger = triggers.pause_trigger(session, auth.tenant_id(), project_id, trigger_id,
                                         now=now, expected_version=expected_version())
        view = _view(session, trigger, None)
    return view, 200, _etag(trigger)


@blp.route("/<uuid:trigger_id>/resume", methods=["POST"])
@blp.response(200, SavedTriggerSchema, headers=ETAG)
@blp.alt_response(412, description="If-Match names an older version.")
@blp.doc(parameters=[IF_MATCH])
def resume(project_id: str, trigger_id: uuid.UUID) -> Any:
    """Resume: same as PATCH `{"enabled": true}`; the next run is counted from now."""
    with transaction() as (session, now):
        trigger = triggers.resume_trigger(session, auth.tenant_id(), project_id, trigger_id,
                                          now=now, expected_version=expected_version())
        view = _view(session, trigger, None)
    tick_if_due_soon([held_next_run(trigger)], now)
    return view, 200, _etag(trigger)


@blp.route("/<uuid:trigger_id>/run", methods=["POST"])
@blp.response(202, InvocationSchema)
def run(project_id: str, trigger_id: uuid.UUID) -> Any:
    """Run now: record a manual invocation and queue it; the schedule is not touched."""
    with transaction() as (session, now):
        invocation = manual.run_now(session, auth.tenant_id(), project_id, trigger_id,
                                    now=now)
        view = invocation_view(invocation)
    log.info("manual run", extra={"action": "trigger.run_now", "tenant_id": auth.tenant_id(),
                                  "project_id": project_id, "trigger_id": trigger_id,
                                  "invocation_id": invocation.id,
                                  "scheduled_for": view["scheduled_for"]})
    published_at = publish_after_commit(
        [InvocationKey(invocation.id, invocation.scheduled_for)], now)
    if published_at is not None:
        view["enqueued_at"] = published_at
    return view


@blp.route("/<uuid:trigger_id>/preview", methods=["GET"])
@blp.arguments(PreviewQuerySchema, location="query")
@blp.response(200, PreviewSchema)
def preview(query: dict[str, Any], project_id: str, trigger_id: uuid.UUID) -> Any:
    """The next `count` (1-100) fire times, in UTC and in the trigger's zone."""
    with transaction() as (session, now):
        trigger = triggers.get_trigger(session, auth.tenant_id(), project_id, trigger_id)
        return preview_view(trigger, now, query["count"])
