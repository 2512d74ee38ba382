"""The run history: invocations (one per occurrence, the outbox of its message), their
attempts, the daily roll-up that outlives retention, and replays."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.enums import InvocationOrigin, InvocationStatus
from app.models.base import Base, Timestamp, checked_enum, uuid_primary_key


class InvocationKey(NamedTuple):
    """An invocation's full key: with ``scheduled_for`` a lookup reads one day partition."""

    id: uuid.UUID
    scheduled_for: dt.datetime


class Invocation(Base):
    """One occurrence of a trigger (or a manual run), and the outbox row of its message.

    Partitioned by day of ``scheduled_for`` (:mod:`app.history.partitions`), so the
    history's retention drops whole days instead of deleting rows; every key includes
    ``scheduled_for``, and a statement that knows it reads one partition.
    """

    __tablename__ = "invocations"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    # No foreign key: deleting a trigger leaves its history as it is (readable by trigger
    # id until retention drops it) instead of rewriting every row, and a message still
    # in flight finds its trigger gone and records the run cancelled.
    trigger_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    #: The row's *key instant*. It has four roles, each with its name in the code:
    #:
    #: * the **occurrence instant** of a scheduled run: when the schedule said it falls
    #:   (:attr:`occurrence_instant`, which a replay overrides with ``occurrence_at``);
    #: * the **occurrence key** with ``trigger_id``: one row per occurrence, whatever
    #:   races (``uq_invocations_trigger_id_scheduled_for``);
    #: * the **day**, the partition key: every statement that knows it reads one day's
    #:   partition (:class:`InvocationKey`, ``attempt_sql.Key``);
    #: * for a manual run (run now, replay), its **manual instant**: the moment asked
    #:   for, made unique per trigger (:func:`app.editing.manual.manual_instant`).
    scheduled_for: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    status: Mapped[InvocationStatus] = mapped_column(
        checked_enum(InvocationStatus, "invocation_status"),
        server_default=InvocationStatus.PENDING.value,
    )
    manual: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: Recorded by a backfill (app.editing.backfill): a manual run of a past occurrence.
    backfill: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    # When the message for the current attempt was published (the outbox's "sent" mark);
    # NULL means committed but not yet published.
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # A retry waits until then; the sweep publishes it again when it is due.
    run_after: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # The running attempt owns the invocation until then; afterwards the sweep takes it
    # back (the worker died) and a new attempt may claim it.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The registry id (process_heartbeats.id) of the worker whose attempt holds the
    #: lease: once that process stops heartbeating, the run is taken back at once
    #: (app.queries.sweep.take_dead_workers_leases), not when the lease runs out.
    leased_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: Set while the run waits in the database for a worker's free thread, with no
    #: message (app.firing.fairness): pending, ``enqueued_at`` NULL. Workers take parked
    #: runs oldest first; a claim or a publish clears it.
    parked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    #: The failed invocation this one replays (app.editing.replay), if any.
    replay_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    #: The occurrence's time the delivery's body carries when it is not scheduled_for
    #: (a replay carries its original's).
    occurrence_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    @property
    def origin(self) -> InvocationOrigin:
        """Why the run exists: its schedule, a run now, a backfill or a replay; a
        scheduled occurrence that could not run is ``missed``."""
        if self.replay_of is not None:
            return InvocationOrigin.REPLAY
        if self.backfill:
            return InvocationOrigin.BACKFILL
        if self.manual:
            return InvocationOrigin.MANUAL
        if self.status is InvocationStatus.MISSED:
            return InvocationOrigin.MISSED
        return InvocationOrigin.SCHEDULED

    @property
    def occurrence_instant(self) -> dt.datetime:
        """When the occurrence this row runs falls: ``occurrence_at`` (a replay's
        original's) or the key instant."""
        return self.occurrence_at or self.scheduled_for

    __table_args__ = (
        # The idempotency key: one invocation per occurrence, whatever races (it holds
        # the partition key, so each day's partition enforces it for its rows). Its index
        # also serves "history of one trigger, newest first" and the last invocation.
        UniqueConstraint("trigger_id", "scheduled_for"),
        # A project's history, newest first (GET /projects/{id}/invocations).
        Index("ix_invocations_project_history", "tenant_id", "project_id", "scheduled_for"),
        CheckConstraint("attempt >= 0", name="attempt_nonnegative"),
        # The last hour's invocations for /metrics (WHERE created_at > now() - 1 hour)
        # and the live part of its counters (app.history.counters):
        #   WHERE created_at >= history_state.counted_before (an hour or two of rows).
        # BRIN: rows arrive in created_at order, so a few bytes per block range serve
        # the range scan without slowing the dispatcher's inserts like a B-tree would.
        Index("ix_invocations_created_at", "created_at", postgresql_using="brin"),
        # The sweep's "message lost" query, an index range scan over only the stale rows
        # (parked rows have no message to lose):
        #   WHERE status = 'pending' AND parked_at IS NULL
        #     AND GREATEST(COALESCE(enqueued_at, created_at), run_after) < :stale
        Index(
            "ix_invocations_pending_last_sent",
            func.greatest(func.coalesce(text("enqueued_at"), text("created_at")),
                          text("run_after")),
            postgresql_where=text("status = 'pending' AND parked_at IS NULL"),
        ),
        # Retries waiting in the database for the dispatcher (sweep.take_unpublished):
        #   WHERE status = 'pending' AND enqueued_at IS NULL AND parked_at IS NULL
        #     AND run_after <= :now
        Index(
            "ix_invocations_retry_due",
            "run_after",
            postgresql_where=text(
                "status = 'pending' AND enqueued_at IS NULL AND parked_at IS NULL"),
        ),
        # Parked runs, for the workers' free threads (app.queries.parking): the tenants
        # that have some (a skip scan), then each one's oldest:
        #   WHERE status = 'pending' AND parked_at IS NOT NULL AND tenant_id = :t
        #   ORDER BY parked_at
        Index(
            "ix_invocations_parked",
            "tenant_id",
            "parked_at",
            postgresql_where=text("status = 'pending' AND parked_at IS NOT NULL"),
        ),
        # Runs that never started, oldest first, for the alert watchdog's "didn't run"
        # (app.alerting.watch): WHERE status = 'pending' AND attempt = 0
        #   AND scheduled_for < :cutoff
        Index(
            "ix_invocations_unstarted",
            "scheduled_for",
            postgresql_where=text("status = 'pending' AND attempt = 0"),
        ),
        # A tenant's running invocations, counted at each claim (the tenant's cap).
        Index(
            "ix_invocations_running_tenant",
            "tenant_id",
            postgresql_where=text("status = 'running'"),
        ),
        # The sweep's "running too long" query: WHERE status = 'running' AND
        # lease_expires_at < now().
        Index(
            "ix_invocations_running",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
        ),
        {"postgresql_partition_by": "RANGE (scheduled_for)"},
    )
    # The id alone is unique (a random UUID); the ORM's identity is the id, so
    # session.get(Invocation, id) works. The table's key adds the partition key.
    __mapper_args__ = {"primary_key": [id]}


class InvocationAttempt(Base):
    """One delivery attempt of an invocation: who ran it, on which deployment, and how.

    Partitioned like its invocation, by the invocation's ``scheduled_for``: an attempt
    lives in the same day as its invocation, and both go together.
    """

    __tablename__ = "invocation_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    invocation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    #: The invocation's scheduled_for: the partition key, and half of the foreign key.
    scheduled_for: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    deployment_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # succeeded, failed (permanent), error (transient), abandoned (lease ran out).
    outcome: Mapped[str | None] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        ForeignKeyConstraint(
            ["invocation_id", "scheduled_for"],
            ["invocations.id", "invocations.scheduled_for"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("invocation_id", "number", "scheduled_for"),
        # The live part of /metrics' counters (app.history.counters):
        #   WHERE started_at >= history_state.counted_before
        # BRIN, as ix_invocations_created_at: an attempt row is inserted when it starts.
        Index("ix_invocation_attempts_started_at", "started_at", postgresql_using="brin"),
        {"postgresql_partition_by": "RANGE (scheduled_for)"},
    )
    __mapper_args__ = {"primary_key": [id]}


class TriggerDayStats(Base):
    """A trigger's runs of one UTC day (by scheduled_for): counts by status and lateness.

    Written by the history's maintenance (:mod:`app.history.retention`) once the day has
    settled and again, final, right before its partition is dropped; kept forever (a row
    a trigger a day), so statistics outlive the history they summarise.
    """

    __tablename__ = "trigger_day_stats"

    trigger_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    pending: Mapped[int] = mapped_column(Integer, server_default="0")
    running: Mapped[int] = mapped_column(Integer, server_default="0")
    succeeded: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    cancelled: Mapped[int] = mapped_column(Integer, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, server_default="0")
    missed: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Start lateness (started_at - scheduled_for) of the day's started runs, seconds.
    lateness_p50_s: Mapped[float | None] = mapped_column(Float)
    lateness_p95_s: Mapped[float | None] = mapped_column(Float)
    rolled_up_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        Index("ix_trigger_day_stats_scope", "tenant_id", "project_id", "trigger_id", "day"),
    )


class HistoryState(Base):
    """The single row of the history's maintenance: what it rolled up and dropped."""

    __tablename__ = "history_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    #: Every day up to and including this one has its rollups (NULL: none yet).
    rolled_up_through: Mapped[dt.date | None] = mapped_column(Date)
    partitions_dropped: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rows_dropped: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: /metrics' counters hold in ``counter_totals`` the history that entered before this
    #: (created, attempts started), and count the rest live (app.history.counters);
    #: NULL: all live, before the first close.
    counted_before: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Where the maintenance's age starts before its first run: the migration that
    #: added it (with the rest, for a new installation).
    watched_since: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class CounterTotal(Base):
    """A /metrics counter's permanent part: the closed hours and the removed rows they
    did not hold (app.history.counters)."""

    __tablename__ = "counter_totals"

    #: invocations, attempts, lateness or alerts (app.history.counters.Family).
    family: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: The status, outcome or bucket the count is of.
    label: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, server_default="0")


class InvocationReplay(Base):
    """One replayed invocation: its primary key makes each original replay once."""

    __tablename__ = "invocation_replays"

    original_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    replay_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    tenant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


