"""The console's project page: a project's alert channels and its alert rule, editable.

Routes of the console's blueprint (:mod:`api.console.blueprint`, which guards them:
signed in, form token). Every action is a POST form answered by a redirect (but the two
that make a secret), and goes through
the same core (:mod:`app.editing.alerts`) and the same marshmallow schemas as the API,
in one transaction, scoped to the tenant: another tenant's project or channel is the
404 page. An action refused (a field the schema refuses, a name taken, a conflict)
answers the page itself, with the error naming the field and the form as it was sent.

A channel's signing secret is shown once, right after it was made (create, rotate): the
action answers with the project's page itself, the secret on it (``Cache-Control:
no-store``), as the API answers with it once. It is in no cookie, no redirect and no
later page, and it is never logged. (Reloading that page would send the form again:
the browser asks first; a second create is refused as a name taken.)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow as ma
from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from api.console.blueprint import blp
from api.console.trigger_views import ALERT_ROWS
from api.schemas.alerts import ChannelCreateSchema, RuleSchema
from api.schemas.fields import PROJECT_ID_PATTERN
from api.state import state, transaction
from app.alerting import delivery
from app.alerting.rules import Rule, describe
from app.editing import alerts
from app.errors import Conflict, NameTaken, NotFound
from app.models import Alert, AlertChannel
from app.targets.webhook import redact_url

log = logging.getLogger(__name__)

#: The rule form's checkboxes: the rule schema's booleans (a box not ticked is false).
RULE_FLAGS = tuple(name for name, field in RuleSchema().fields.items()
                   if isinstance(field, ma.fields.Boolean))
SOURCES = {"project": "the project's own", "default": "the default"}
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)

Page = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Failure:
    """An action refused: which form, its errors ("field: message"), what was sent."""

    form: str
    errors: list[str]
    values: Mapping[str, str]


@blp.url_value_preprocessor
def _known_project(_: str | None, values: dict[str, Any] | None) -> None:
    # On every console route: a project id no project can have (a NUL, too long) is
    # no project, the 404 page, never a statement PostgreSQL refuses (a 500).
    if values and not _PROJECT_ID.fullmatch(values.get("project_id", "-")):
        raise NotFound("no such project")


def _show_once(project_id: str, channel: AlertChannel, secret: str) -> Page:
    """The project's page with a new signing secret on it: the answer to the POST itself
    (no redirect), so the secret travels once, in this page, as the API's answer carries
    it once; it is in no cookie, no log and no later page."""
    return _page(project_id, shown={"channel_id": str(channel.id), "name": channel.name,
                                    "secret": secret})


def _field_errors(messages: Any) -> list[str]:
    """marshmallow's messages as lines naming the field (as the API names it)."""
    if not isinstance(messages, Mapping):
        return [str(message) for message in messages]
    return [f"{field}: {message}" for field, found in sorted(messages.items())
            for message in (found if isinstance(found, list) else [found])]


def _page(project_id: str, *, status: int = 200, failure: Failure | None = None,
          shown: Mapping[str, str] | None = None) -> Page:
    with transaction() as (db, _):
        found = alerts.project_alerts(db, g.tenant_id, project_id, limit=ALERT_ROWS)
        names = {channel.id: channel.name for channel in found.channels}
        return render_template(
            "console/project.html", project_id=project_id, found=found, names=names,
            urls={channel.id: redact_url(channel.url) for channel in found.channels},
            rule_text=describe(found.rule.rule), source=SOURCES[found.rule.source],
            own_rules=[(trigger, describe(rule)) for trigger, rule in found.own_rules],
            rule_values=_rule_values(found.rule.rule, failure), shown=shown,
            failure=failure,
        ), status


def _rule_values(rule: Rule, failure: Failure | None) -> dict[str, Any]:
    """The rule form's values: as sent when it was refused, else the rule in force."""
    if failure is not None and failure.form == "rule":
        return {**failure.values, **{flag: flag in failure.values for flag in RULE_FLAGS}}
    late = rule.late_after_s
    return {**dataclasses.asdict(rule), "late_after_s": "" if late is None else late}


def _form(name: str) -> Callable[[Callable[..., Response | Page]],
                                 Callable[..., Response | Page]]:
    """Answer a refused action with the page, its error under the form ``name`` (a
    channel's forms: ``channel-<id>``), the form's values kept. Nothing was written: the
    transaction is rolled back. NotFound is the 404 page (the blueprint's)."""

    def wrap(view: Callable[..., Response | Page]) -> Callable[..., Response | Page]:
        @functools.wraps(view)
        def run(project_id: str, **kwargs: Any) -> Response | Page:
            try:
                return view(project_id, **kwargs)
            except ma.ValidationError as exc:
                errors, status = _field_errors(exc.messages), 422
            except NameTaken as exc:
                errors, status = [f"name: {exc.message}"], 409
            except Conflict as exc:
                errors, status = [exc.message], 409
            form = name if "channel_id" not in kwargs else f"{name}-{kwargs['channel_id']}"
            values = {key: value for key, value in request.form.items()
                      if key != "csrf_token"}
            return _page(project_id, status=status, failure=Failure(form, errors, values))

        return run

    return wrap


def _back(project_id: str) -> Response:
    return redirect(url_for("console.project_page", project_id=project_id))


@blp.get("/projects/<project_id>")
def project_page(project_id: str) -> Page:
    return _page(project_id)


@blp.post("/projects/<project_id>/channels")
@_form("create-channel")
def create_channel(project_id: str) -> Page:
    values = ChannelCreateSchema().load({name: request.form.get(name, "").strip()
                                         for name in ("name", "url")})
    with transaction() as (db, now):
        alerts.require_project(db, g.tenant_id, project_id)
        channel = alerts.create_channel(db, g.tenant_id, project_id, values, now=now)
        secret = channel.signing_secret
    log.info("alert channel created in the console", extra={
        "action": "alert.channel_create", "tenant_id": g.tenant_id,
        "project_id": project_id, "channel_id": str(channel.id)})
    flash(f"Channel {channel.name} added: it receives the project's alerts.")
    return _show_once(project_id, channel, secret)


@blp.post("/projects/<project_id>/channels/<uuid:channel_id>/rotate")
@_form("channel")
def rotate_secret(project_id: str, channel_id: uuid.UUID) -> Page:
    with transaction() as (db, now):
        channel, secret = alerts.update_channel(db, g.tenant_id, project_id, channel_id,
                                                {"rotate_secret": True}, now=now)
    assert secret is not None, "rotating makes a secret"
    log.info("alert channel secret rotated in the console", extra={
        "action": "alert.channel_rotate", "tenant_id": g.tenant_id,
        "project_id": project_id, "channel_id": str(channel_id)})
    flash(f"Channel {channel.name} has a new signing secret: the old one no longer signs.")
    return _show_once(project_id, channel, secret)


@blp.post("/projects/<project_id>/channels/<uuid:channel_id>/enable",
          defaults={"enabled": True}, endpoint="enable_channel")
@blp.post("/projects/<project_id>/channels/<uuid:channel_id>/disable",
          defaults={"enabled": False}, endpoint="disable_channel")
@_form("channel")
def set_channel_enabled(project_id: str, channel_id: uuid.UUID, enabled: bool) -> Response:
    with transaction() as (db, now):
        channel, _ = alerts.update_channel(db, g.tenant_id, project_id, channel_id,
                                           {"enabled": enabled}, now=now)
    flash(f"Channel {channel.name} enabled." if enabled
          else f"Channel {channel.name} disabled: alerts skip it until it is enabled.")
    return _back(project_id)


@blp.post("/projects/<project_id>/channels/<uuid:channel_id>/delete")
@_form("channel")
def delete_channel(project_id: str, channel_id: uuid.UUID) -> Response:
    with transaction() as (db, _):
        channel = alerts.get_channel(db, g.tenant_id, project_id, channel_id, for_update=True)
        name = channel.name
        if request.form.get("confirm", "").strip() != name:
            raise ma.ValidationError(
                {"confirm": [f"type the channel's name ({name}) to delete it"]})
        alerts.delete_channel(db, g.tenant_id, project_id, channel_id)
    flash(f"Channel {name} deleted.")
    return _back(project_id)


@blp.post("/projects/<project_id>/channels/<uuid:channel_id>/test")
@_form("channel")
def send_test_alert(project_id: str, channel_id: uuid.UUID) -> Response:
    settings = state().settings
    with transaction() as (db, now):
        alert_id = alerts.record_test_alert(db, g.tenant_id, project_id, channel_id,
                                            now=now, public_url=settings.public_url).id
    delivery.deliver_test_alert(state().sessions, alert_id,
                                allow_private=settings.allow_private_targets)
    with state().sessions.begin() as db:
        sent = db.get_one(Alert, alert_id)
        flash(f"Test alert {sent.status}: {sent.last_error}" if sent.last_error
              else f"Test alert {sent.status} (HTTP {sent.response_status}).")
    return _back(project_id)


def _rule_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The rule form as the API's body: a box ticked is true, an empty number left out
    is null where the schema allows it (``late_after_s``: off)."""
    body: dict[str, Any] = {flag: flag in form for flag in RULE_FLAGS}
    for name, field in RuleSchema().fields.items():
        if name not in RULE_FLAGS:
            text = form.get(name, "").strip()
            body[name] = None if text == "" and field.allow_none else text
    return body


@blp.post("/projects/<project_id>/rule")
@_form("rule")
def set_rule(project_id: str) -> Response:
    rule = Rule(**RuleSchema().load(_rule_body(request.form)))
    with transaction() as (db, now):
        alerts.require_project(db, g.tenant_id, project_id)
        alerts.set_rule(db, g.tenant_id, project_id, None, rule, now=now)
    flash(f"The project's rule is now: {describe(rule)}.")
    return _back(project_id)


@blp.post("/projects/<project_id>/rule/clear")
def clear_rule(project_id: str) -> Response:
    with transaction() as (db, _):
        alerts.require_project(db, g.tenant_id, project_id)
        try:
            alerts.clear_rule(db, g.tenant_id, project_id, None)
            message = ("The project's rule is cleared: its triggers without a rule of their"
                       " own follow the defaults.")
        except NotFound:  # cleared already (another tab): nothing to do
            message = "The project had no rule of its own: it follows the defaults."
    flash(message)
    return _back(project_id)
