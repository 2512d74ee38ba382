"""The console's pages of one trigger and of one run, and the actions on them.

A trigger's page shows its state (:func:`api.console.display.trigger_state`), its
definition and payload (credentials redacted as the API redacts them), its next runs,
its history (origin, start lateness, duration, attempts) and its alerts. A run's page
shows every attempt. Run now, pause and resume are also offered on the list: each form
names the page to go back to (``next``), and a refused action shows its error there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid

from flask import abort, flash, g, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from api.console import display
from api.console.blueprint import back_to, blp, form_text
from api.presenters import describe_schedule, trigger_view
from api.publishing import held_next_run, publish_after_commit, tick_if_due_soon
from api.state import state, transaction
from app.alerting.rules import describe as describe_rule
from app.editing import alerts, invocations, manual, triggers
from app.errors import Conflict, NotFound
from app.models import InvocationAttempt, InvocationKey, Trigger
from app.targets import target_of

HISTORY_ROWS = 20
#: The trigger page's last alerts.
ALERT_ROWS = 10
MAX_NOTE = 500


@blp.app_template_filter("seconds")
def _seconds(value: float | None) -> str:
    return display.seconds(value)


@blp.get("/projects/<project_id>/triggers/<uuid:trigger_id>")
def trigger_page(project_id: str, trigger_id: uuid.UUID) -> str:
    with transaction() as (db, now):
        trigger = triggers.get_trigger(db, g.tenant_id, project_id, trigger_id)
        last = invocations.last_invocations(db, g.tenant_id, [trigger.id]).get(trigger.id)
        history = invocations.list_invocations(db, g.tenant_id, project_id, trigger_id,
                                               limit=HISTORY_ROWS)
        attempts: dict[uuid.UUID, list[InvocationAttempt]] = {row.id: [] for row in history}
        if history:
            rows = db.execute(select(InvocationAttempt).where(
                InvocationAttempt.invocation_id.in_(list(attempts)),
                InvocationAttempt.scheduled_for.in_([r.scheduled_for for r in history]),
            ).order_by(InvocationAttempt.number)).scalars()
            for attempt in rows:
                attempts[attempt.invocation_id].append(attempt)
        alerting = alerts.trigger_alerts(db, g.tenant_id, project_id, trigger_id,
                                         limit=ALERT_ROWS)
        view = trigger_view(trigger, last)
        return render_template(
            "console/trigger.html", trigger=trigger, view=view,
            state=display.trigger_state(trigger, now),
            description=describe_schedule(trigger), runs=display.next_runs(trigger, now),
            target_line=target_of(trigger.target_kind).describe(trigger),
            payload=json.dumps(view["payload"], indent=2, sort_keys=True),
            history=[(row, attempts[row.id], display.run_timing(row, attempts[row.id]))
                     for row in history],
            alerting=alerting, rule_text=describe_rule(alerting.rule.rule))


@blp.get("/projects/<project_id>/invocations/<uuid:invocation_id>")
def invocation_page(project_id: str, invocation_id: uuid.UUID) -> str:
    with transaction() as (db, _):
        invocation, attempts = invocations.get_invocation(db, g.tenant_id, project_id,
                                                          invocation_id)
        trigger = None
        if invocation.trigger_id is not None:
            with contextlib.suppress(NotFound):  # deleted since: its history stays
                trigger = triggers.get_trigger(db, g.tenant_id, project_id,
                                               invocation.trigger_id)
        return render_template(
            "console/invocation.html", invocation=invocation, attempts=attempts,
            timing=display.run_timing(invocation, attempts), trigger=trigger,
            task=trigger is not None and trigger.task_name is not None)


def _trigger_back(project_id: str, trigger_id: uuid.UUID) -> Response:
    return back_to(url_for("console.trigger_page", project_id=project_id,
                           trigger_id=trigger_id))


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/run")
def run_now(project_id: str, trigger_id: uuid.UUID) -> Response:
    with transaction() as (db, now):
        invocation = manual.run_now(db, g.tenant_id, project_id, trigger_id, now=now)
        key = InvocationKey(invocation.id, invocation.scheduled_for)
        name = db.get_one(Trigger, trigger_id).name  # loaded by run_now: no query
    publish_after_commit([key], now)
    flash(f"Run of {name} requested: its history shows it pending, then its outcome.")
    return _trigger_back(project_id, trigger_id)


def _offering(db: Session, project_id: str, trigger_id: uuid.UUID, now: dt.datetime,
              action: str) -> Trigger:
    """The trigger, if its state offers ``action`` (pause, resume): a page left open
    from before may ask for one it no longer offers.

    Raises:
        Conflict: it does not, naming its state.
    """
    trigger = triggers.get_trigger(db, g.tenant_id, project_id, trigger_id)
    state = display.trigger_state(trigger, now)
    if not (state.can_pause if action == "pause" else state.can_resume):
        raise Conflict(f"{trigger.name} is {state.name}: there is nothing to {action}")
    return trigger


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/pause")
def pause(project_id: str, trigger_id: uuid.UUID) -> Response:
    note = form_text(request.form.get("note"), MAX_NOTE)
    with transaction() as (db, now):
        name = _offering(db, project_id, trigger_id, now, "pause").name
        triggers.pause_trigger(db, g.tenant_id, project_id, trigger_id, now=now, note=note)
    flash(f"Paused {name}: its pending scheduled runs are cancelled.")
    return _trigger_back(project_id, trigger_id)


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/resume")
def resume(project_id: str, trigger_id: uuid.UUID) -> Response:
    with transaction() as (db, now):
        name = _offering(db, project_id, trigger_id, now, "resume").name
        trigger = triggers.resume_trigger(db, g.tenant_id, project_id, trigger_id, now=now)
    tick_if_due_soon([held_next_run(trigger)], now)
    flash(f"Resumed {name}: the next run counts from now.")
    return _trigger_back(project_id, trigger_id)


@blp.post("/projects/<project_id>/invocations/<uuid:invocation_id>/cancel")
def cancel(project_id: str, invocation_id: uuid.UUID) -> Response:
    try:
        with transaction() as (db, now):
            cancelled = invocations.cancel_invocation(db, g.tenant_id, project_id,
                                                      invocation_id, now=now)
            trigger_id = cancelled.trigger_id
        flash("Cancelled." if cancelled.status.is_final
              else "Cancel requested: it stops before its next attempt.")
    except Conflict as exc:
        with state().sessions.begin() as db:
            row, _ = invocations.get_invocation(db, g.tenant_id, project_id, invocation_id)
            trigger_id = row.trigger_id
        flash(exc.message, "error")
    if trigger_id is None:
        abort(404)
    return _trigger_back(project_id, trigger_id)

