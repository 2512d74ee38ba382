"""A project's alert channels, its alert rules (project default and per trigger), and
its alert history: the API's and the console's core (tenant-scoped, caller commits).

Every function filters by tenant, so another tenant's channel or trigger is NotFound.
A channel's signing secret is generated when not given, and the caller shows it once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from app.alerting.observe import console_link, iso_utc
from app.alerting.rules import DEFAULT_RULE, AlertKind, Rule
from app.editing.triggers import get_trigger
from app.errors import Conflict, NameTaken, NotFound
from app.models import Alert, AlertChannel, AlertRule, Trigger, TriggerAlertState
from app.queries import alerts as alert_queries
from app.queries.locks import lock_project
from app.targets.webhook import new_signing_secret

#: A project has at most this many channels (each alert goes to every enabled one).
MAX_CHANNELS_PER_PROJECT = 10
RULE_FIELDS = tuple(field.name for field in dataclasses.fields(Rule))


def list_channels(session: Session, tenant_id: str, project_id: str) -> list[AlertChannel]:
    return list(session.execute(
        select(AlertChannel)
        .where(AlertChannel.tenant_id == tenant_id, AlertChannel.project_id == project_id)
        .order_by(AlertChannel.created_at, AlertChannel.id)
    ).scalars())


def get_channel(session: Session, tenant_id: str, project_id: str, channel_id: uuid.UUID,
                *, for_update: bool = False) -> AlertChannel:
    """Raises NotFound: no such channel in this tenant's project."""
    channel = alert_queries.channel(session, tenant_id, project_id, channel_id,
                                    for_update=for_update)
    if channel is None:
        raise NotFound("no such alert channel in this project")
    return channel


def _name_taken(session: Session, tenant_id: str, project_id: str, name: str,
                other_than: uuid.UUID | None = None) -> bool:
    return session.execute(select(AlertChannel.id).where(
        AlertChannel.tenant_id == tenant_id, AlertChannel.project_id == project_id,
        AlertChannel.name == name,
        *([AlertChannel.id != other_than] if other_than else []),
    )).first() is not None


def create_channel(session: Session, tenant_id: str, project_id: str,
                   values: Mapping[str, Any], *, now: dt.datetime) -> AlertChannel:
    """Add a channel (``name``, ``url``, optional ``signing_secret`` and ``enabled``).

    Raises:
        NameTaken: the project has a channel of that name.
        Conflict: the project has MAX_CHANNELS_PER_PROJECT channels already.
    """
    # The project's lock makes the count and the name check exact under concurrent calls.
    lock_project(session, tenant_id, project_id)
    if _name_taken(session, tenant_id, project_id, values["name"]):
        raise NameTaken(f"an alert channel named {values['name']!r} exists in this project")
    count = session.scalar(select(func.count()).select_from(AlertChannel).where(
        AlertChannel.tenant_id == tenant_id, AlertChannel.project_id == project_id))
    if (count or 0) >= MAX_CHANNELS_PER_PROJECT:
        raise Conflict(f"a project has at most {MAX_CHANNELS_PER_PROJECT} alert channels")
    channel = AlertChannel(
        tenant_id=tenant_id, project_id=project_id, name=values["name"], url=values["url"],
        signing_secret=values.get("signing_secret") or new_signing_secret(),
        enabled=values.get("enabled", True), created_at=now, updated_at=now)
    session.add(channel)
    session.flush()
    return channel


def update_channel(session: Session, tenant_id: str, project_id: str,
                   channel_id: uuid.UUID, values: Mapping[str, Any], *,
                   now: dt.datetime) -> tuple[AlertChannel, str | None]:
    """Change a channel's fields given in ``values``; ``rotate_secret`` makes a new one.

    Returns:
        The channel, and its new signing secret when it changed (to show once).

    Raises:
        NotFound, NameTaken.
    """
    channel = get_channel(session, tenant_id, project_id, channel_id, for_update=True)
    name = values.get("name")
    if name is not None and name != channel.name:
        lock_project(session, tenant_id, project_id)
        if _name_taken(session, tenant_id, project_id, name, other_than=channel_id):
            raise NameTaken(f"an alert channel named {name!r} exists in this project")
        channel.name = name
    if "url" in values:
        channel.url = values["url"]
    if "enabled" in values:
        channel.enabled = values["enabled"]
    secret = None
    if values.get("signing_secret"):
        secret = channel.signing_secret = values["signing_secret"]
    elif values.get("rotate_secret"):
        secret = channel.signing_secret = new_signing_secret()
    channel.updated_at = now
    session.flush()
    return channel, secret


def delete_channel(session: Session, tenant_id: str, project_id: str,
                   channel_id: uuid.UUID) -> None:
    """Delete a channel; its pending alerts fail at their next attempt. Raises NotFound."""
    session.delete(get_channel(session, tenant_id, project_id, channel_id, for_update=True))
    session.flush()


@dataclasses.dataclass(frozen=True)
class RuleInForce:
    rule: Rule
    #: Where it comes from: "trigger" (its own), "project" (the default) or "default".
    source: str


def _rule_row(session: Session, tenant_id: str, project_id: str,
              trigger_id: uuid.UUID | None) -> AlertRule | None:
    return session.execute(select(AlertRule).where(
        AlertRule.tenant_id == tenant_id, AlertRule.project_id == project_id,
        AlertRule.trigger_id.is_(None) if trigger_id is None
        else AlertRule.trigger_id == trigger_id,
    )).scalar_one_or_none()


def _rule(row: AlertRule) -> Rule:
    return Rule(**{name: getattr(row, name) for name in RULE_FIELDS})


def rule_in_force(session: Session, tenant_id: str, project_id: str,
                  trigger_id: uuid.UUID | None = None) -> RuleInForce:
    """The project's rule (``trigger_id`` None) or the trigger's, with its source.

    Raises:
        NotFound: ``trigger_id`` is not a trigger of this tenant's project.
    """
    if trigger_id is not None:
        get_trigger(session, tenant_id, project_id, trigger_id)
        own = _rule_row(session, tenant_id, project_id, trigger_id)
        if own is not None:
            return RuleInForce(_rule(own), "trigger")
    project = _rule_row(session, tenant_id, project_id, None)
    if project is not None:
        return RuleInForce(_rule(project), "project")
    return RuleInForce(DEFAULT_RULE, "default")


def set_rule(session: Session, tenant_id: str, project_id: str,
             trigger_id: uuid.UUID | None, rule: Rule, *, now: dt.datetime) -> RuleInForce:
    """Set the project's default rule, or a trigger's own. Raises NotFound."""
    if trigger_id is not None:
        get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    else:
        lock_project(session, tenant_id, project_id)
    row = _rule_row(session, tenant_id, project_id, trigger_id)
    if row is None:
        row = AlertRule(tenant_id=tenant_id, project_id=project_id, trigger_id=trigger_id)
        session.add(row)
    for name in RULE_FIELDS:
        setattr(row, name, getattr(rule, name))
    row.updated_at = now
    session.flush()
    return RuleInForce(rule, "project" if trigger_id is None else "trigger")


def clear_rule(session: Session, tenant_id: str, project_id: str,
               trigger_id: uuid.UUID | None) -> None:
    """Remove the project's default rule, or a trigger's own (it then inherits).

    Raises:
        NotFound: no such trigger, or no such rule set.
    """
    if trigger_id is not None:
        get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    row = _rule_row(session, tenant_id, project_id, trigger_id)
    if row is None:
        raise NotFound("no alert rule is set here")
    session.execute(delete(AlertRule).where(AlertRule.id == row.id))


def list_alerts(
    session: Session, tenant_id: str, project_id: str, *, limit: int,
    trigger_id: uuid.UUID | None = None, kind: str | None = None, status: str | None = None,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
) -> list[Alert]:
    """The project's alerts, newest first (ix_alerts_project_history), ``limit`` of them."""
    conditions = [Alert.tenant_id == tenant_id, Alert.project_id == project_id]
    if trigger_id is not None:
        conditions.append(Alert.trigger_id == trigger_id)
    if kind is not None:
        conditions.append(Alert.kind == kind)
    if status is not None:
        conditions.append(Alert.status == status)
    if before is not None:
        at, ident = before
        conditions.append(or_(Alert.created_at < at,
                              and_(Alert.created_at == at, Alert.id < ident)))
    return list(session.execute(
        select(Alert).where(*conditions)
        .order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit)
    ).scalars())


def record_test_alert(session: Session, tenant_id: str, project_id: str,
                      channel_id: uuid.UUID, *, now: dt.datetime,
                      public_url: str | None) -> Alert:
    """Record a test alert to one channel, to deliver at once. Raises NotFound."""
    channel = get_channel(session, tenant_id, project_id, channel_id)
    alert_id = uuid.uuid4()
    alert = Alert(
        id=alert_id, tenant_id=tenant_id, project_id=project_id, channel_id=channel.id,
        kind=AlertKind.TEST.value, status="pending", next_attempt_at=now, created_at=now,
        # The watchdog leaves it alone: the request delivers it, once.
        published_at=now,
        body={"type": "test", "alert_id": str(alert_id), "created_at": iso_utc(now),
              "tenant_id": tenant_id, "project_id": project_id, "trigger": None,
              "occurrence": None, "invocation": None, "condition": None,
              "consecutive_failures": 0, "late_s": None,
              "link": console_link(public_url, project_id, None)},
    )
    session.add(alert)
    session.flush()
    return alert


@dataclasses.dataclass(frozen=True)
class TriggerAlerts:
    """What the console shows of a trigger's alerts."""

    state: TriggerAlertState | None
    rule: RuleInForce
    enabled_channels: int
    recent: list[Alert]


def trigger_alerts(session: Session, tenant_id: str, project_id: str,
                   trigger_id: uuid.UUID, *, limit: int) -> TriggerAlerts:
    """A trigger's alert condition, rule in force, channels and last alerts. Raises NotFound."""
    rule = rule_in_force(session, tenant_id, project_id, trigger_id)
    state = session.execute(select(TriggerAlertState).where(
        TriggerAlertState.trigger_id == trigger_id,
        TriggerAlertState.tenant_id == tenant_id)).scalar_one_or_none()
    channels = sum(channel.enabled for channel in list_channels(session, tenant_id, project_id))
    recent = list_alerts(session, tenant_id, project_id, limit=limit, trigger_id=trigger_id)
    return TriggerAlerts(state=state, rule=rule, enabled_channels=channels, recent=recent)


def require_project(session: Session, tenant_id: str, project_id: str) -> None:
    """Projects are implicit: one is the tenant's while it holds a trigger, a channel or
    a rule (the console's project page). Raises NotFound otherwise."""
    held = session.scalar(select(or_(*(
        exists().where(model.tenant_id == tenant_id, model.project_id == project_id)
        for model in (Trigger, AlertChannel, AlertRule)))))
    if not held:
        raise NotFound("no such project")


@dataclasses.dataclass(frozen=True)
class ProjectAlerts:
    """What the console shows of a project's alerts."""

    channels: list[AlertChannel]
    #: The project's rule (its own, or the default).
    rule: RuleInForce
    #: The project's triggers that have a rule of their own, by name.
    own_rules: list[tuple[Trigger, Rule]]
    recent: list[Alert]


def project_alerts(session: Session, tenant_id: str, project_id: str, *,
                   limit: int) -> ProjectAlerts:
    """A project's channels, rules and last ``limit`` alerts. Raises NotFound (no such
    project: :func:`require_project`)."""
    require_project(session, tenant_id, project_id)
    own = session.execute(
        select(Trigger, AlertRule).join(AlertRule, AlertRule.trigger_id == Trigger.id)
        .where(AlertRule.tenant_id == tenant_id, AlertRule.project_id == project_id,
               Trigger.tenant_id == tenant_id, Trigger.project_id == project_id)
        .order_by(Trigger.name)
    ).all()
    return ProjectAlerts(
        channels=list_channels(session, tenant_id, project_id),
        rule=rule_in_force(session, tenant_id, project_id),
        own_rules=[(trigger, _rule(row)) for trigger, row in own],
        recent=list_alerts(session, tenant_id, project_id, limit=limit))
