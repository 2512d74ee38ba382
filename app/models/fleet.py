"""The fleet's state: the active deployment, the processes' registry and heartbeats,
the console's secret and the API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamp, uuid_primary_key


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

    id: Mapped[uuid.UUID] = uuid_primary_key()
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)


