"""The console's pages: sign-in, triggers, one trigger with its runs, deployments.

Server-rendered (Jinja templates of ours, no JavaScript); every action is a POST form
with the session's form token, answered by a redirect, and goes through the same core
functions as the API, with the same tenant scoping: another tenant's trigger or
invocation is a 404 page.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from api.console import session as console_session
from api.console.strip import strip
from api.presenters import describe_schedule, trigger_view
from api.publishing import held_next_run, publish_after_commit, tick_if_due_soon
from api.state import state, transaction
from app import metrics
from app.alerting.rules import describe as describe_rule
from app.deploys import deploy
from app.editing import alerts, apikeys, invocations, manual, triggers
from app.errors import Conflict, NotFound
from app.history import stats
from app.models import Invocation, InvocationAttempt, InvocationKey, Trigger
from app.schedule.kinds import local_time, schedule_of
from app.targets import target_of

PAGE_SIZE = 50
STRIP_DAYS = 30
NEXT_RUNS = 10
HISTORY_ROWS = 20
#: The trigger page's last alerts.
ALERT_ROWS = 10
MAX_SEARCH = 200
MAX_NOTE = 500

blp = Blueprint("console", __name__, url_prefix=console_session.PREFIX,
                template_folder="templates", static_folder="static")
OPEN = {"console.sign_in", "console.static"}


@blp.before_request
def _guard() -> Response | None:
    console_session.check_csrf()
    if request.endpoint in OPEN:
        return None
    tenant_id = console_session.signed_in_tenant()
    if tenant_id is None:
        return redirect(url_for("console.sign_in"))
    g.tenant_id = tenant_id
    return None


@blp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'")
    return response


@blp.app_template_global()
def csrf_token() -> str:
    return console_session.csrf_token()


@blp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> tuple[str, int]:
    return render_template("console/error.html", status=404, message=exc.message), 404


@blp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_template("console/error.html", status=exc.code,
                           message=exc.description), exc.code or 500


@blp.get("/")
def index() -> Response:
    return redirect(url_for("console.trigger_list"))


@blp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    if request.method == "POST":
        with state().sessions.begin() as db:
            found = apikeys.authenticate_key(db, request.form.get("api_key", "").strip())
        if found is not None:
            console_session.sign_in(found[0])
            return redirect(url_for("console.trigger_list"))
        error = "That API key is unknown or revoked."
    return render_template("console/sign_in.html", error=error), 401 if error else 200


@blp.post("/sign-out")
def sign_out() -> Response:
    session.clear()
    return redirect(url_for("console.sign_in"))


def _text(value: str | None, limit: int) -> str:
    """A form or query value as text PostgreSQL takes (no NUL), at most ``limit`` long."""
    return (value or "").replace("\x00", "").strip()[:limit]


def _filters() -> dict[str, Any]:
    text = _text(request.args.get("q"), MAX_SEARCH)
    enabled = {"enabled": True, "paused": False}.get(request.args.get("state", ""))
    return {"text": text or None, "enabled": enabled,
            "failing": request.args.get("failing") == "1"}


@blp.get("/triggers")
def trigger_list() -> str:
    filters = _filters()
    after = None
    if request.args.get("after_project") is not None:
        after = (_text(request.args["after_project"], 64),
                 _text(request.args.get("after_name"), 200))
    with transaction() as (db, now):
        today = now.date()
        first_day = today - dt.timedelta(days=STRIP_DAYS - 1)
        rows = triggers.search_triggers(db, g.tenant_id, limit=PAGE_SIZE + 1, after=after,
                                        **filters)
        page = rows[:PAGE_SIZE]
        last = invocations.last_invocations(db, g.tenant_id, [t.id for t in page])
        days = stats.days_of(db.connection(), g.tenant_id, [t.id for t in page],
                             first_day=first_day, last_day=today)
        items = [_row(t, last.get(t.id), strip({d.day: d.counts for d in days[t.id]},
                                                first_day, STRIP_DAYS))
                 for t in page]
    more = None
    if len(rows) > PAGE_SIZE:
        more = url_for("console.trigger_list", **{
            **request.args.to_dict(), "after_project": page[-1].project_id,
            "after_name": page[-1].name})
    return render_template("console/triggers.html", items=items, more=more,
                           filters=request.args)


def _row(trigger: Trigger, last: Invocation | None, days: dict[str, Any]) -> dict[str, Any]:
    return {
        "trigger": trigger,
        "description": describe_schedule(trigger),
        "next_utc": trigger.next_run_at,
        "next_local": _local(trigger.next_run_at, trigger.timezone),
        "last": last,
        "strip": days,
    }


def _local(moment: dt.datetime | None, zone: str) -> dt.datetime | None:
    return None if moment is None else local_time(moment, zone)


def next_runs(trigger: Trigger, now: dt.datetime) -> list[dict[str, Any]]:
    """The next runs, each in UTC and local time, marked where a DST rule moved it.

    None while paused: a paused trigger does not run (resuming counts from then).
    """
    if not trigger.enabled:
        return []
    schedule, zone = schedule_of(trigger), trigger.timezone
    return [{"utc": moment, "local": _local(moment, zone), "dst": schedule.dst_note(moment, zone)}
            for moment in schedule.times(now, NEXT_RUNS)]


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
        return render_template(
            "console/trigger.html", trigger=trigger, view=trigger_view(trigger, last),
            description=describe_schedule(trigger), runs=next_runs(trigger, now),
            target_line=target_of(trigger.target_kind).describe(trigger),
            history=history, attempts=attempts, alerting=alerting,
            rule_text=describe_rule(alerting.rule.rule))


def _back(project_id: str, trigger_id: uuid.UUID) -> Response:
    return redirect(url_for("console.trigger_page", project_id=project_id,
                            trigger_id=trigger_id))


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/run")
def run_now(project_id: str, trigger_id: uuid.UUID) -> Response:
    with transaction() as (db, now):
        invocation = manual.run_now(db, g.tenant_id, project_id, trigger_id, now=now)
        key = InvocationKey(invocation.id, invocation.scheduled_for)
    publish_after_commit([key], now)
    flash("Run requested: it appears below as pending, then with its outcome.")
    return _back(project_id, trigger_id)


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/pause")
def pause(project_id: str, trigger_id: uuid.UUID) -> Response:
    note = _text(request.form.get("note"), MAX_NOTE)
    with transaction() as (db, now):
        triggers.pause_trigger(db, g.tenant_id, project_id, trigger_id, now=now, note=note)
    flash("Paused: its pending scheduled runs are cancelled.")
    return _back(project_id, trigger_id)


@blp.post("/projects/<project_id>/triggers/<uuid:trigger_id>/resume")
def resume(project_id: str, trigger_id: uuid.UUID) -> Response:
    with transaction() as (db, now):
        trigger = triggers.resume_trigger(db, g.tenant_id, project_id, trigger_id, now=now)
    tick_if_due_soon([held_next_run(trigger)], now)
    flash("Resumed: the next run counts from now.")
    return _back(project_id, trigger_id)


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
        flash(exc.message)
    if trigger_id is None:
        abort(404)
    return _back(project_id, trigger_id)


@blp.route("/deployments", methods=["GET", "POST"])
def deployments() -> Any:
    error = None
    if request.method == "POST":
        expected = state().settings.admin_token
        if expected and apikeys.tokens_equal(request.form.get("admin_token", ""), expected):
            session["admin"] = True
            return redirect(url_for("console.deployments"))
        error = "That is not the admin token (or none is configured)."
    if not session.get("admin"):
        return render_template("console/admin_sign_in.html", error=error), (
            401 if error else 200)
    with state().sessions.begin() as db:
        status = deploy.status(db)
        snapshot = metrics.collect(db)
    return render_template("console/deployments.html", status=status, snapshot=snapshot)
