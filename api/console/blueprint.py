"""The console's blueprint: the sign-in guard, the headers, and how errors are shown.

Every page module (:mod:`api.console.views`, :mod:`api.console.trigger_views`) adds its
routes to :data:`blp`. An error is never raw JSON: a page that cannot be shown is the
error page with its status; an action (a POST) that the core refuses goes back to the
page it came from, which shows the error, naming the field where there is one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from api.console import session as console_session
from api.errors import DOMAIN_STATUSES
from app.errors import CronbeatError, InvalidTrigger, NameTaken, NotFound

blp = Blueprint("console", __name__, url_prefix=console_session.PREFIX,
                template_folder="templates", static_folder="static")
OPEN = {"console.sign_in", "console.static"}
#: The form field naming the console page an action goes back to.
NEXT_FIELD = "next"


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


def form_text(value: str | None, limit: int) -> str:
    """A form or query value as text PostgreSQL takes (no NUL), at most ``limit`` long."""
    return (value or "").replace("\x00", "").strip()[:limit]


def back_to(default: str) -> Response:
    """A redirect to the page the form named (a console path), else to ``default``."""
    wanted = request.form.get(NEXT_FIELD, "")
    parts = urlsplit(wanted)
    if (not parts.scheme and not parts.netloc and "\\" not in wanted
            and parts.path.startswith(console_session.PREFIX + "/")):
        return redirect(wanted)
    return redirect(default)


def error_text(error: CronbeatError) -> str:
    """The words an error shows: its message, after the field it is about."""
    if isinstance(error, InvalidTrigger):
        return f"{error.field}: {error.message}"
    if isinstance(error, NameTaken):
        return f"name: {error.message}"
    return error.message


@blp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> tuple[str, int]:
    return render_template("console/error.html", status=404, message=exc.message), 404


@blp.errorhandler(CronbeatError)
def _refused(exc: CronbeatError) -> Response | tuple[str, int]:
    status = next(code for kind, code in (*DOMAIN_STATUSES, (CronbeatError, 500))
                  if isinstance(exc, kind))
    if status >= 500:
        return render_template("console/error.html", status=status, message=(
            "Cronbeat could not do that now: try again in a moment.")), status
    if request.method == "POST":
        flash(f"Not done: {error_text(exc)}", "error")
        return back_to(_page_of_action())
    return render_template("console/error.html", status=status,
                           message=error_text(exc)), status


def _page_of_action() -> str:
    """The page an action's form is on: its trigger's or invocation's, else the list."""
    args = request.view_args or {}
    if "trigger_id" in args:
        return url_for("console.trigger_page", project_id=args["project_id"],
                       trigger_id=args["trigger_id"])
    if "invocation_id" in args:
        return url_for("console.invocation_page", project_id=args["project_id"],
                       invocation_id=args["invocation_id"])
    return url_for("console.trigger_list")


@blp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_template("console/error.html", status=exc.code,
                           message=exc.description), exc.code or 500
