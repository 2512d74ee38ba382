"""The process registry: every worker, dispatcher and beat reports itself every few seconds.

One row per process (:class:`app.models.ProcessHeartbeat`), upserted by the process's
presence thread (:mod:`app.deploys.presence`) with its role and, for a worker, whether its
consumer is consuming. A row not seen for :data:`LIVE_TTL_S` belongs to a dead process
(it is no longer *live*: activation guards and ``deploy status`` ignore it); rows not
seen for :data:`EXPIRE_AFTER_S` are deleted by whichever process writes next.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.enums import ProcessKind, ProcessRole
from app.models import ProcessHeartbeat

Executor = Session | Connection

#: How often a process writes its row (and re-reads its role, if no NOTIFY woke it).
HEARTBEAT_INTERVAL_S = 5.0
#: A row not seen for this long is a dead process's.
LIVE_TTL_S = 30.0
#: Rows not seen for this long are deleted.
EXPIRE_AFTER_S = 600.0

RUN_QUEUE = "cronbeat.runs"
DISPATCH_QUEUE = "cronbeat.dispatch"


@dataclasses.dataclass(frozen=True)
class _Who:
    """What names a process: fixed for its lifetime."""

    id: uuid.UUID
    deployment_id: str | None
    kind: ProcessKind
    hostname: str
    pid: int
    queues: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Identity(_Who):
    """Who a process is, and the generation in force when it started."""

    registered_generation: int


@dataclasses.dataclass(frozen=True)
class Report:
    """How a process is, as of one heartbeat."""

    role: ProcessRole
    #: None for processes that consume no queue.
    consuming: bool | None = None
    #: Why the process is unhealthy, in words (None: healthy as far as it knows).
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class ProcessView(_Who):
    """One row of the registry, as read back, with its age."""

    role: ProcessRole
    consuming: bool | None
    problem: str | None
    started_at: dt.datetime
    last_seen_at: dt.datetime
    seen_s_ago: float

    @property
    def live(self) -> bool:
        return self.seen_s_ago <= LIVE_TTL_S


def kind_for_queues(queues: Sequence[str]) -> ProcessKind:
    """Return the kind of a Celery worker consuming ``queues`` (pure)."""
    return ProcessKind.DISPATCHER if set(queues) == {DISPATCH_QUEUE} else ProcessKind.WORKER


def missing_for_activation(rows: Sequence[ProcessView]) -> list[str]:
    """Return what a deployment lacks to be activated safely (pure; empty: nothing).

    It needs a live worker (a process consuming cronbeat.runs), and a live beat or
    dispatcher.
    """
    live = [row for row in rows if row.live]
    missing = []
    if not any(RUN_QUEUE in row.queues for row in live):
        missing.append("worker (a process consuming cronbeat.runs)")
    if not any(row.kind in (ProcessKind.BEAT, ProcessKind.DISPATCHER) for row in live):
        missing.append("beat or dispatcher")
    return missing


def heartbeat(conn: Executor, identity: Identity, report: Report) -> None:
    """Write the process's row: insert it on the first call, refresh it after."""
    now = func.now()
    values = {
        "role": report.role.value,
        "consuming": report.consuming,
        "problem": report.problem,
        "last_seen_at": now,
    }
    conn.execute(
        insert(ProcessHeartbeat)
        .values(
            id=identity.id,
            deployment_id=identity.deployment_id,
            kind=identity.kind.value,
            hostname=identity.hostname[:255],
            pid=identity.pid,
            queues=list(identity.queues),
            registered_generation=identity.registered_generation,
            started_at=now,
            **values,
        )
        .on_conflict_do_update(index_elements=[ProcessHeartbeat.id], set_=values)
    )


def unregister(conn: Executor, process_id: uuid.UUID) -> None:
    """Delete the process's row (a clean shutdown)."""
    conn.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.id == process_id))


def expire(conn: Executor) -> int:
    """Delete rows of processes not seen for EXPIRE_AFTER_S; returns how many."""
    cutoff = func.now() - dt.timedelta(seconds=EXPIRE_AFTER_S)
    result = conn.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.last_seen_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def live(conn: Executor, deployment_id: str | None = None, *,
         include_dead: bool = False) -> list[ProcessView]:
    """Return the registry's live rows (of one deployment if given), oldest first."""
    age = func.extract("epoch", func.now() - ProcessHeartbeat.last_seen_at)
    query = select(*ProcessHeartbeat.__table__.c, age.label("age")).order_by(
        ProcessHeartbeat.deployment_id, ProcessHeartbeat.kind, ProcessHeartbeat.started_at,
        ProcessHeartbeat.id,
    )
    if deployment_id is not None:
        query = query.where(ProcessHeartbeat.deployment_id == deployment_id)
    if not include_dead:
        query = query.where(
            ProcessHeartbeat.last_seen_at >= func.now() - dt.timedelta(seconds=LIVE_TTL_S)
        )
    views = []
    for row in conn.execute(query).all():
        views.append(ProcessView(
            id=row.id, deployment_id=row.deployment_id, kind=ProcessKind(row.kind),
            hostname=row.hostname, pid=row.pid, queues=tuple(row.queues),
            role=ProcessRole(row.role), consuming=row.consuming, problem=row.problem,
            started_at=row.started_at, last_seen_at=row.last_seen_at,
            seen_s_ago=max(0.0, float(row.age)),
        ))
    return views
