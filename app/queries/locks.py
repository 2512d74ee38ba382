"""Advisory locks and id-ordered row locks; the order they are taken in is the package's
(:mod:`app.queries`)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select, text
from sqlalchemy.orm import Session

from app.models import Invocation

#: The deploy fence's key ("cronbeat" in ASCII); nothing else uses it. Kept as it was
#: when the fence was first written: processes of an older deployment still running
#: beside a newer one must take the same lock.
FENCE_LOCK_KEY = 0x63726F6E62656174


def fence_shared(session: Session) -> None:
    """Hold the deploy fence shared until commit (every claim; :func:`app.deploys.deploy.fence`)."""
    session.execute(select(func.pg_advisory_xact_lock_shared(FENCE_LOCK_KEY)))


def fence_exclusive(session: Session) -> None:
    """Hold the deploy fence exclusively until commit: every claim in flight is done first."""
    session.execute(select(func.pg_advisory_xact_lock(FENCE_LOCK_KEY)))


# Advisory locks of one purpose share a namespace: the first key of PostgreSQL's
# two-key form (which never overlaps the one-key form the fence uses). The second key
# is a 32-bit hash of what is locked; a collision only serializes two unrelated calls.
PROJECT_NAMESPACE = 0x63620001  # "cb" 0001
TRIGGER_RUNS_NAMESPACE = 0x63620002
#: One tenant's claims while CRONBEAT_TENANT_MAX_RUNNING is on; the second key is
#: PostgreSQL's hashtext(tenant_id), computed in the claim's own statement.
TENANT_RUNS_NAMESPACE = 0x63620003


#: The history's maintenance (app.history.retention): one run at a time, fleet-wide.
HISTORY_NAMESPACE = 0x63620004
#: The alert watchdog (app.alerting.watch): one pass at a time, fleet-wide; a
#: transaction's lock, only ever tried, never waited for.
ALERTS_NAMESPACE = 0x63620005


def try_lock_history(conn: Connection) -> bool:
    """Take the history maintenance's lock for this connection's session; False if held.

    Session-level (it outlives the run's many short transactions) and never waited
    for, so it is part of no lock order.
    """
    return bool(conn.execute(select(func.pg_try_advisory_lock(HISTORY_NAMESPACE, 0))).scalar())


def unlock_history(conn: Connection) -> None:
    conn.execute(select(func.pg_advisory_unlock(HISTORY_NAMESPACE, 0)))


def hold_history(session: Session) -> None:
    """Read the rest of this transaction at one snapshot that no history drop can cut.

    /metrics' counters add stored parts to a live count (app.history.counters); a day's
    drop moves its count between them in one transaction. REPEATABLE READ gives one
    snapshot, but the partitions a query plans against are the catalog's latest, so a
    drop committed after the snapshot would hide the day's rows while its count is not
    yet in the totals. ``ACCESS SHARE`` on both parents, taken before the first query
    (which fixes the snapshot), makes a drop either committed before it or wait for it.
    Attempts first, as the maintenance drops them (app.history.partitions.drop_day).
    Must be the transaction's first statement.
    """
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    session.execute(text("LOCK TABLE invocation_attempts, invocations IN ACCESS SHARE MODE"))


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


def lock_project(session: Session, tenant_id: str, project_id: str) -> None:
    """Hold the project's lock until commit: its multi-trigger edits run one at a time."""
    key = _hash32(f"{tenant_id}/{project_id}")
    session.execute(select(func.pg_advisory_xact_lock(PROJECT_NAMESPACE, key)))


def lock_trigger_runs(session: Session, trigger_id: uuid.UUID) -> None:
    """Serialize, until commit, the start of runs of one trigger (overlap policy skip).

    Without it two runs of one trigger can each check "is another one running?" before
    either's claim commits, and both run. An advisory lock, not ``FOR UPDATE`` on the
    trigger row: the dispatcher claims trigger rows with ``SKIP LOCKED`` and would skip
    a trigger whose run is merely starting.
    """
    key = _hash32(str(trigger_id))
    session.execute(select(func.pg_advisory_xact_lock(TRIGGER_RUNS_NAMESPACE, key)))


def by_id(*conditions: ColumnElement[bool], skip_locked: bool = False) -> Select[Any]:
    """The ids of the invocations matching ``conditions``, locked in id order.

    For ``UPDATE ... WHERE id IN (this)``: the rows are locked one by one in primary-key
    order whatever plan the planner picks for the conditions.
    """
    return (
        select(Invocation.id)
        .where(*conditions)
        .order_by(Invocation.id)
        .with_for_update(skip_locked=skip_locked)
    )
