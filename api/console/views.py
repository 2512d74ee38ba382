"""The console's pages: sign-in, the trigger list, deployments.

Server-rendered (Jinja templates of ours, no JavaScript); every action is a POST form
with the session's form token, answered by a redirect, and goes through the same core
functions as the API, with the same tenant scoping: another tenant's trigger or
invocation is a 404 page. One trigger's page, its runs and its actions are in
:mod:`api.console.trigger_views`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from flask import abort, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from api.console import display
from api.console import session as console_session
from api.console.blueprint import blp, form_text
from api.console.strip import strip
from api.presenters import describe_schedule
from api.state import state, transaction
from app import metrics
from app.deploys import deploy
from app.editing import apikeys, invocations, triggers
from app.history import stats
from app.models import Invocation, Trigger

PAGE_SIZE = 50
STRIP_DAYS = 30
MAX_SEARCH = 200


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


def _filters() -> dict[str, Any]:
    text = form_text(request.args.get("q"), MAX_SEARCH)
    enabled = {"enabled": True, "paused": False}.get(request.args.get("state", ""))
    return {"text": text or None, "enabled": enabled,
            "failing": request.args.get("failing") == "1"}


def _after(order: str) -> tuple[Any, ...] | None:
    """The page's start from its query (``after_project``/``after_name`` by name,
    ``after_at``/``after_id`` by next or last run); a malformed one is a 400 page."""
    if order == "name":
        if request.args.get("after_project") is None:
            return None
        return (form_text(request.args["after_project"], 64),
                form_text(request.args.get("after_name"), 200))
    if request.args.get("after_at") is None:
        return None
    try:
        return (dt.datetime.fromisoformat(request.args["after_at"]),
                uuid.UUID(request.args.get("after_id", "")))
    except ValueError:
        abort(400, "after_at and after_id: not a page of this list (start again from the"
                   " first page)")


def _next_page(order: str, last: Trigger) -> str:
    after = triggers.order_cursor(last, order)
    cursor = ({"after_project": after[0], "after_name": after[1]} if order == "name"
              else {"after_at": after[0].isoformat(), "after_id": str(after[1])})
    return url_for("console.trigger_list", **{**_query_without_cursor(), **cursor})


def _query_without_cursor() -> dict[str, str]:
    """The list's query (search, filters, sort) without the page's start."""
    return {key: value for key, value in request.args.items() if not key.startswith("after_")}


@blp.get("/triggers")
def trigger_list() -> str:
    filters = _filters()
    order = request.args.get("sort", "name")
    if order not in triggers.TRIGGER_ORDERS:
        abort(400, f"sort: one of {', '.join(triggers.TRIGGER_ORDERS)}")
    with transaction() as (db, now):
        today = now.date()
        first_day = today - dt.timedelta(days=STRIP_DAYS - 1)
        rows = triggers.search_triggers(db, g.tenant_id, limit=PAGE_SIZE + 1, order=order,
                                        after=_after(order), **filters)
        page = rows[:PAGE_SIZE]
        last = invocations.last_invocations(db, g.tenant_id, [t.id for t in page])
        days = stats.days_of(db.connection(), g.tenant_id, [t.id for t in page],
                             first_day=first_day, last_day=today)
        items = [_row(t, last.get(t.id), strip({d.day: d.counts for d in days[t.id]},
                                                first_day, STRIP_DAYS), now)
                 for t in page]
    more = _next_page(order, page[-1]) if len(rows) > PAGE_SIZE else None
    sorts = {name: url_for("console.trigger_list", **{**_query_without_cursor(), "sort": name})
             for name in triggers.TRIGGER_ORDERS}
    return render_template("console/triggers.html", items=items, more=more,
                           filters=request.args, order=order, sorts=sorts,
                           here=request.full_path.rstrip("?"))


def _row(trigger: Trigger, last: Invocation | None, days: dict[str, Any],
         now: dt.datetime) -> dict[str, Any]:
    return {
        "trigger": trigger,
        "state": display.trigger_state(trigger, now),
        "description": describe_schedule(trigger),
        "next_utc": trigger.next_run_at,
        "next_local": display.local(trigger.next_run_at, trigger.timezone),
        "last": last,
        "strip": days,
    }


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
    # The metrics read first in a transaction of their own (one snapshot, see collect).
    with state().sessions.begin() as db:
        snapshot = metrics.collect(db)
    with state().sessions.begin() as db:
        status = deploy.status(db)
    return render_template("console/deployments.html", status=status, snapshot=snapshot)
