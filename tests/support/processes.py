"""Registry rows for tests that need a deployment's processes to look live (or dead)."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.deploys import processes
from app.enums import ProcessKind, ProcessRole


def register(
    db: sessionmaker[Session], deployment_id: str | None, kind: ProcessKind,
    queues: tuple[str, ...] = (), *, role: ProcessRole = ProcessRole.STANDBY,
    consuming: bool | None = None, problem: str | None = None, hostname: str = "host-a",
    pid: int = 4242, seen_s_ago: float = 0.0,
) -> uuid.UUID:
    """Write one heartbeat row as a process would; ``seen_s_ago`` back-dates it."""
    identity = processes.Identity(
        id=uuid.uuid4(), deployment_id=deployment_id, kind=kind, hostname=hostname, pid=pid,
        queues=queues, registered_generation=0,
    )
    with db.begin() as session:
        processes.heartbeat(session, identity, processes.Report(role, consuming, problem))
        if seen_s_ago:
            session.execute(
                text("UPDATE process_heartbeats SET last_seen_at = now() - make_interval("
                     "secs => :age) WHERE id = :id"),
                {"age": seen_s_ago, "id": identity.id},
            )
    return identity.id


def register_fleet(db: sessionmaker[Session], deployment_id: str) -> None:
    """A live worker and a live beat of ``deployment_id``: enough to activate it."""
    register(db, deployment_id, ProcessKind.WORKER, (processes.RUN_QUEUE,), consuming=False)
    register(db, deployment_id, ProcessKind.BEAT)
