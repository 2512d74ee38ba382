"""Alerts: channels, rules, each trigger's alert state, and the alerts raised."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamp, uuid_primary_key


class AlertChannel(Base):
    """Where a project's alerts go: a webhook signed with the channel's own secret."""

    __tablename__ = "alert_channels"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2048))
    signing_secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        # Also serves "does this project have an enabled channel", asked by each claim.
        UniqueConstraint("tenant_id", "project_id", "name"),
    )


class AlertRule(Base):
    """A project's default alert rule (trigger_id NULL), or one trigger's own."""

    __tablename__ = "alert_rules"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    trigger_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    on_failure: Mapped[bool] = mapped_column(Boolean)
    failures_in_a_row: Mapped[int] = mapped_column(Integer)
    on_missed: Mapped[bool] = mapped_column(Boolean)
    late_after_s: Mapped[int | None] = mapped_column(Integer)
    on_recovery: Mapped[bool] = mapped_column(Boolean)
    on_didnt_run: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        Index("uq_alert_rules_project", "tenant_id", "project_id", unique=True,
              postgresql_where=text("trigger_id IS NULL")),
        Index("uq_alert_rules_trigger", "trigger_id", unique=True,
              postgresql_where=text("trigger_id IS NOT NULL")),
        CheckConstraint("failures_in_a_row BETWEEN 1 AND 1000", name="failures_range"),
        CheckConstraint("late_after_s BETWEEN 1 AND 86400", name="late_range"),
    )


class TriggerAlertState(Base):
    """A trigger's alert condition and its failures in a row (app.alerting.rules.State)."""

    __tablename__ = "trigger_alert_state"

    trigger_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    #: failing, missed, late or didnt_run; NULL: fine.
    condition: Mapped[str | None] = mapped_column(String(16))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    last_outcome_for: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The newest occurrence the watchdog reported as not run (alerted or, by the rule,
    #: not): it is not reported again, so a trigger whose rule says nothing cannot fill
    #: every pass of the watchdog.
    didnt_run_seen_for: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    changed_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class Alert(Base):
    """One alert to one channel: the outbox row of its delivery, then its history.

    Deleted by the history's maintenance once older than the history's retention.
    """

    __tablename__ = "alerts"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    trigger_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    invocation_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(16))
    #: pending (to deliver, or retrying), delivered, failed (gave up).
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    #: The JSON body delivered, fixed when the alert is raised.
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    #: A pending alert's next attempt may start then; an attempt under way holds it
    #: until its lease (this, moved ahead by the claim) runs out.
    next_attempt_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    #: When its message was last published (NULL: not yet).
    published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        CheckConstraint(
            "kind IN ('failing', 'missed', 'late', 'didnt_run', 'recovered', 'test')",
            name="kind",
        ),
        # A project's alert history, newest first.
        Index("ix_alerts_project_history", "tenant_id", "project_id", "created_at"),
        # The watchdog's due alerts: WHERE status = 'pending' AND next_attempt_at <= :t
        Index("ix_alerts_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # The retention's delete: WHERE created_at < :cutoff
        Index("ix_alerts_created_at", "created_at"),
    )
