"""SQLAlchemy models: the schema, with the invariants the database itself enforces."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.enums import InvocationStatus, MisfirePolicy, OverlapPolicy, TargetKind
from app.limits import MAX_ATTEMPTS, TIMEOUT_S

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


def _enum(cls: type, name: str) -> Enum:
    # VARCHAR + a named CHECK rather than a PostgreSQL ENUM type: adding a member later is
    # a constraint swap, not an ALTER TYPE that cannot run inside a transaction.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Trigger(Base):
    """A schedule (cron in a zone, or one run_at) and the target each occurrence delivers to."""

    __tablename__ = "triggers"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))

    cron_expression: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # The next occurrence to fire; NULL when disabled or finished. Advanced by the
    # dispatcher from the occurrence's scheduled time, never from the wall clock.
    next_run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_scheduled_for: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    target_kind: Mapped[TargetKind] = mapped_column(_enum(TargetKind, "target_kind"))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_method: Mapped[str] = mapped_column(String(8), server_default="POST")
    webhook_headers: Mapped[dict[str, str]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    signing_secret: Mapped[str | None] = mapped_column(String(200))
    task_name: Mapped[str | None] = mapped_column(String(200))
    task_queue: Mapped[str | None] = mapped_column(String(200))

    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    message_template: Mapped[str | None] = mapped_column(Text)

    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    backoff_base_s: Mapped[int] = mapped_column(Integer, server_default="2")
    backoff_cap_s: Mapped[int] = mapped_column(Integer, server_default="300")
    timeout_s: Mapped[int] = mapped_column(Integer, server_default="30")
    misfire_policy: Mapped[MisfirePolicy] = mapped_column(
        _enum(MisfirePolicy, "misfire_policy"), server_default=MisfirePolicy.RUN_ONCE.value
    )
    misfire_grace_s: Mapped[int] = mapped_column(Integer, server_default="300")
    overlap_policy: Mapped[OverlapPolicy] = mapped_column(
        _enum(OverlapPolicy, "overlap_policy"), server_default=OverlapPolicy.ALLOW.value
    )
    ref: Mapped[str | None] = mapped_column(String(200), index=True)
    #: What the operator wrote when pausing it (the console); cleared by a resume.
    pause_note: Mapped[str | None] = mapped_column(Text)
    # Bumped by every update; the API's ETag, checked by If-Match.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("tenant_id", "project_id", "name"),
        CheckConstraint(
            "(cron_expression IS NULL) <> (run_at IS NULL)", name="exactly_one_schedule"
        ),
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
    )


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

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
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
        _enum(InvocationStatus, "invocation_status"),
        server_default=InvocationStatus.PENDING.value,
    )
    manual: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
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
        # The last hour's invocations for /metrics (WHERE created_at > now() - 1 hour).
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

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class InvocationReplay(Base):
    """One replayed invocation: its primary key makes each original replay once."""

    __tablename__ = "invocation_replays"

    original_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    replay_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    tenant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class SchedulerState(Base):
    """The single row that says which deployment's scheduler is the active one."""

    __tablename__ = "scheduler_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    generation: Mapped[int] = mapped_column(BigInteger, server_default="0")
    active_deployment_id: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class Deployment(Base):
    """A deployment id that was activated at least once: when, and at which generation.

    A process whose deployment is listed here but is not the active one was superseded;
    one whose deployment was never activated is a standby (see :mod:`app.deploys.deploy`).
    """

    __tablename__ = "deployments"

    deployment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    first_activated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    last_activated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    #: The generation its latest activation set.
    generation: Mapped[int] = mapped_column(BigInteger)


class ProcessHeartbeat(Base):
    """One live worker, dispatcher or beat process, as it last reported itself.

    Written by the process every few seconds (:mod:`app.deploys.processes`); a row not seen for
    ``processes.LIVE_TTL_S`` is a dead process, and rows older than
    ``processes.EXPIRE_AFTER_S`` are deleted.
    """

    __tablename__ = "process_heartbeats"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    deployment_id: Mapped[str | None] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: The Cronbeat queues this process consumes from (empty for beat and the CLI loop).
    queues: Mapped[list[str]] = mapped_column(ARRAY(String(200)), server_default="{}")
    #: The generation in force when the process started.
    registered_generation: Mapped[int] = mapped_column(BigInteger)
    #: active, standby or superseded, as the process computed it at its last heartbeat.
    role: Mapped[str] = mapped_column(String(16))
    #: Whether a worker's consumer is consuming its queues now (None: not a consumer).
    consuming: Mapped[bool | None] = mapped_column(Boolean)
    #: Why the process is unhealthy, in its own words (None: healthy).
    problem: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(),
                                                      index=True)

    __table_args__ = (
        CheckConstraint("kind IN ('worker', 'dispatcher', 'beat')", name="kind"),
        CheckConstraint("role IN ('active', 'standby', 'superseded')", name="role"),
    )


class DispatcherHeartbeat(Base):
    """The last dispatcher tick, whoever ran it: what /metrics reports as the tick's age."""

    __tablename__ = "dispatcher_heartbeat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    last_tick_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_tick_duration_ms: Mapped[float | None] = mapped_column(Float)
    last_tick_deployment_id: Mapped[str | None] = mapped_column(String(100))
    last_tick_report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: The broker's epoch as the last tick saw it (messaging.backlog.broker_epoch): a
    #: different one means the broker lost its data since (app.queries.claims).
    broker_epoch: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class ConsoleSecret(Base):
    """The single row holding the key that signs the console's session cookies."""

    __tablename__ = "console_secret"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class ApiKey(Base):
    """A tenant's API key. Only a SHA-256 digest of the key is stored, never the key."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)


class AlertChannel(Base):
    """Where a project's alerts go: a webhook signed with the channel's own secret."""

    __tablename__ = "alert_channels"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
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

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
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

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
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
