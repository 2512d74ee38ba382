"""A project's alerts: channels (signed webhooks) with a test delivery, rules, history.

Alerts go to every enabled channel of the project when a trigger's condition changes
(app.alerting.rules): N scheduled runs in a row failed, a run missed, a run started
late, an occurrence that did not run within its grace, and once on recovery.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask.views import MethodView

from api import auth
from api.pagination import decode_time_cursor, time_page
from api.parser import Blueprint
from api.schemas.alerts import (
    AlertListQuerySchema,
    AlertPageSchema,
    AlertSchema,
    ChannelCreateSchema,
    ChannelListSchema,
    ChannelPatchSchema,
    ChannelSchema,
    RuleInForceSchema,
    RuleSchema,
)
from api.state import state, transaction
from app.alerting import delivery
from app.alerting.rules import Rule
from app.editing import alerts
from app.models import Alert, AlertChannel
from app.targets.webhook import redact_url

log = logging.getLogger(__name__)

blp = Blueprint(
    "alerts", __name__, url_prefix="/api/v1/projects/<project_id>",
    description="Alerts: where a project's failure alerts go, when they go, and what went.",
)
blp.before_request(auth.require_tenant)


def channel_view(channel: AlertChannel, secret: str | None = None) -> dict[str, Any]:
    return {"id": channel.id, "project_id": channel.project_id, "name": channel.name,
            "url": redact_url(channel.url), "enabled": channel.enabled,
            "created_at": channel.created_at, "updated_at": channel.updated_at,
            "signing_secret": secret}


def alert_view(alert: Alert) -> dict[str, Any]:
    return {name: getattr(alert, name) for name in (
        "id", "channel_id", "trigger_id", "invocation_id", "kind", "status", "attempts",
        "last_error", "response_status", "created_at", "finished_at", "body")}


def _rule_view(found: alerts.RuleInForce) -> dict[str, Any]:
    return {**{name: getattr(found.rule, name) for name in alerts.RULE_FIELDS},
            "source": found.source}


@blp.route("/alerts/channels")
class ChannelCollection(MethodView):
    @blp.response(200, ChannelListSchema)
    def get(self, project_id: str) -> Any:
        """The project's alert channels (secrets are never shown again)."""
        with state().sessions.begin() as session:
            rows = alerts.list_channels(session, auth.tenant_id(), project_id)
            return {"items": [channel_view(row) for row in rows]}

    @blp.arguments(ChannelCreateSchema)
    @blp.response(201, ChannelSchema)
    @blp.alt_response(409, description="A channel of that name exists, or the project has"
                      f" {alerts.MAX_CHANNELS_PER_PROJECT} already.")
    def post(self, values: dict[str, Any], project_id: str) -> Any:
        """Add a channel: a URL that receives alerts as signed (Standard Webhooks) POSTs.

        Its signing secret is in this answer only. The URL is checked like every webhook's
        when an alert is sent: private and loopback addresses are refused unless the
        operator allows them."""
        with transaction() as (session, now):
            channel = alerts.create_channel(session, auth.tenant_id(), project_id, values,
                                            now=now)
            view = channel_view(channel, channel.signing_secret)
        log.info("alert channel created", extra={
            "action": "alert.channel_create", "tenant_id": auth.tenant_id(),
            "project_id": project_id, "channel_id": str(channel.id)})
        return view, 201


@blp.route("/alerts/channels/<uuid:channel_id>")
class ChannelItem(MethodView):
    @blp.response(200, ChannelSchema)
    def get(self, project_id: str, channel_id: uuid.UUID) -> Any:
        """One alert channel."""
        with state().sessions.begin() as session:
            return channel_view(
                alerts.get_channel(session, auth.tenant_id(), project_id, channel_id))

    @blp.arguments(ChannelPatchSchema)
    @blp.response(200, ChannelSchema)
    def patch(self, values: dict[str, Any], project_id: str, channel_id: uuid.UUID) -> Any:
        """Change a channel: name, url, enabled, or its secret (set or `rotate_secret`)."""
        with transaction() as (session, now):
            channel, secret = alerts.update_channel(
                session, auth.tenant_id(), project_id, channel_id, values, now=now)
            return channel_view(channel, secret)

    @blp.response(204)
    def delete(self, project_id: str, channel_id: uuid.UUID) -> None:
        """Delete a channel; alerts still pending for it fail at their next attempt."""
        with transaction() as (session, _):
            alerts.delete_channel(session, auth.tenant_id(), project_id, channel_id)


@blp.route("/alerts/channels/<uuid:channel_id>/test", methods=["POST"])
@blp.response(200, AlertSchema)
def test_channel(project_id: str, channel_id: uuid.UUID) -> Any:
    """Send the channel a test alert now, once, and answer how it went.

    The alert (kind `test`) is signed like every alert and recorded in the history; a
    failure is in its `status`, `last_error` and `response_status`, not retried."""
    settings = state().settings
    with transaction() as (session, now):
        alert = alerts.record_test_alert(session, auth.tenant_id(), project_id, channel_id,
                                         now=now, public_url=settings.public_url)
    delivery.deliver_test_alert(state().sessions, alert.id,
                                allow_private=settings.allow_private_targets)
    with state().sessions.begin() as session:
        return alert_view(session.get_one(Alert, alert.id))


def _rule_routes(path: str, endpoint: str, doc_target: str) -> None:
    """GET / PUT / DELETE of a rule at ``path`` (the project's, or a trigger's)."""

    class RuleItem(MethodView):
        @blp.response(200, RuleInForceSchema)
        def get(self, project_id: str, trigger_id: uuid.UUID | None = None) -> Any:
            with state().sessions.begin() as session:
                return _rule_view(alerts.rule_in_force(session, auth.tenant_id(), project_id,
                                                       trigger_id))

        @blp.arguments(RuleSchema)
        @blp.response(200, RuleInForceSchema)
        def put(self, values: dict[str, Any], project_id: str,
                trigger_id: uuid.UUID | None = None) -> Any:
            with transaction() as (session, now):
                return _rule_view(alerts.set_rule(session, auth.tenant_id(), project_id,
                                                  trigger_id, Rule(**values), now=now))

        @blp.response(204)
        def delete(self, project_id: str, trigger_id: uuid.UUID | None = None) -> None:
            with transaction() as (session, _):
                alerts.clear_rule(session, auth.tenant_id(), project_id, trigger_id)

    RuleItem.get.__doc__ = f"The alert rule in force for {doc_target}, and where it comes from."
    RuleItem.put.__doc__ = f"Set the alert rule of {doc_target}; left-out fields take defaults."
    RuleItem.delete.__doc__ = (f"Remove the alert rule of {doc_target}, which then inherits"
                               " (a trigger the project's, the project the built-in one).")
    RuleItem.__name__ = endpoint
    blp.route(path, endpoint=endpoint)(RuleItem)


_rule_routes("/alerts/rule", "ProjectAlertRule", "the project (its triggers' default)")
_rule_routes("/triggers/<uuid:trigger_id>/alerts/rule", "TriggerAlertRule", "one trigger")


@blp.route("/alerts", methods=["GET"])
@blp.arguments(AlertListQuerySchema, location="query")
@blp.response(200, AlertPageSchema)
def list_alerts(query: dict[str, Any], project_id: str) -> Any:
    """The project's alerts, newest first, with how their delivery went.

    Filters: `trigger_id`, `kind`, `status`. Alerts are kept as long as the run history
    (CRONBEAT_HISTORY_RETENTION_DAYS)."""
    limit = query["limit"]
    with state().sessions.begin() as session:
        rows = alerts.list_alerts(
            session, auth.tenant_id(), project_id, limit=limit + 1,
            trigger_id=query.get("trigger_id"), kind=query.get("kind"),
            status=query.get("status"), before=decode_time_cursor(query.get("cursor")))
        return time_page(rows, limit, query, at="created_at", view=alert_view)
