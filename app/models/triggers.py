"""The triggers table: a schedule, a target and how its runs are retried."""

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
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.enums import MisfirePolicy, OverlapPolicy, TargetKind
from app.limits import MAX_ATTEMPTS, TIMEOUT_S
from app.models.base import Base, Timestamp, checked_enum, uuid_primary_key


class Trigger(Base):
    """A schedule (cron in a zone, one run_at, or an interval from its start_at) and the
    target each occurrence delivers to."""

    __tablename__ = "triggers"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))

    cron_expression: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Every interval_s seconds from start_at (absolute time: app.schedule.kinds.Interval).
    interval_s: Mapped[int | None] = mapped_column(Integer)
    start_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # The next occurrence to fire; NULL when disabled or finished. Advanced by the
    # dispatcher from the occurrence's scheduled time, never from the wall clock.
    next_run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_scheduled_for: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    target_kind: Mapped[TargetKind] = mapped_column(checked_enum(TargetKind, "target_kind"))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_method: Mapped[str] = mapped_column(String(8), server_default="POST")
    webhook_headers: Mapped[dict[str, str]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    signing_secret: Mapped[str | None] = mapped_column(String(200))
    task_name: Mapped[str | None] = mapped_column(String(200))
    task_queue: Mapped[str | None] = mapped_column(String(200))
    #: The task's own arguments (a JSON array and object), unless it takes the envelope.
    task_args: Mapped[list[Any] | None] = mapped_column(JSONB)
    task_kwargs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: The task is called with one argument, the occurrence's envelope (as before 0014).
    task_envelope: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: A run waits for the task's own outcome (cronbeat.celery in the user's worker).
    task_outcome: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    message_template: Mapped[str | None] = mapped_column(Text)

    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    backoff_base_s: Mapped[int] = mapped_column(Integer, server_default="2")
    backoff_cap_s: Mapped[int] = mapped_column(Integer, server_default="300")
    timeout_s: Mapped[int] = mapped_column(Integer, server_default="30")
    misfire_policy: Mapped[MisfirePolicy] = mapped_column(
        checked_enum(MisfirePolicy, "misfire_policy"), server_default=MisfirePolicy.RUN_ONCE.value
    )
    misfire_grace_s: Mapped[int] = mapped_column(Integer, server_default="300")
    overlap_policy: Mapped[OverlapPolicy] = mapped_column(
        checked_enum(OverlapPolicy, "overlap_policy"), server_default=OverlapPolicy.ALLOW.value
    )
    ref: Mapped[str | None] = mapped_column(String(200), index=True)
    #: What the operator wrote when pausing it (the console); cleared by a resume.
    pause_note: Mapped[str | None] = mapped_column(Text)
    #: The code that declares it (``cronbeat sync MODULE:APP`` writes "MODULE:APP"), whose
    #: definition edits refuse unless forced (app.editing.managed); NULL: the API's.
    managed_by: Mapped[str | None] = mapped_column(Text)
    # Bumped by every update; the API's ETag, checked by If-Match.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("tenant_id", "project_id", "name"),
        CheckConstraint(
            "num_nonnulls(cron_expression, run_at, interval_s) = 1", name="exactly_one_schedule"
        ),
        CheckConstraint("(interval_s IS NULL) = (start_at IS NULL)",
                        name="interval_has_start"),
        CheckConstraint("interval_s IS NULL OR interval_s >= 1", name="interval_range"),
        CheckConstraint(
            "(target_kind = 'webhook' AND webhook_url IS NOT NULL)"
            " OR (target_kind = 'task' AND task_name IS NOT NULL)",
            name="target_complete",
        ),
        # An enabled trigger always knows its next occurrence; the due index relies on it.
        CheckConstraint("NOT enabled OR next_run_at IS NOT NULL", name="enabled_has_next_run"),
        CheckConstraint(f"max_attempts BETWEEN {MAX_ATTEMPTS[0]} AND {MAX_ATTEMPTS[1]}",
                        name="max_attempts_range"),
        CheckConstraint("backoff_base_s >= 0 AND backoff_cap_s >= backoff_base_s",
                        name="backoff_range"),
        CheckConstraint(f"timeout_s BETWEEN {TIMEOUT_S[0]} AND {TIMEOUT_S[1]}",
                        name="timeout_range"),
        CheckConstraint("misfire_grace_s >= 0", name="misfire_grace_nonnegative"),
        # Serves the dispatcher's only hot query:
        #   SELECT ... FROM triggers WHERE enabled AND next_run_at IS NOT NULL
        #     AND next_run_at <= now() ORDER BY next_run_at LIMIT n (locked: app.queries.claims)
        # Idle and finished triggers are not in it, so a tick reads only the due rows.
        Index(
            "ix_triggers_due",
            "next_run_at",
            postgresql_where=text("enabled AND next_run_at IS NOT NULL"),
        ),
        # The held kinds' (one-time and interval) share of it: a tick also takes theirs
        # due before the next tick, and reads them here, not next minute's cron rows.
        Index(
            "ix_triggers_held_due",
            "next_run_at",
            postgresql_where=text("enabled AND next_run_at IS NOT NULL"
                                  " AND cron_expression IS NULL"),
        ),
    )


