"""Deployments: which code's scheduler is the active one, and the fence that enforces it.

``scheduler_state`` holds one row: the active deployment id and a generation that counts
activations. Until a deployment is first activated, gating is off (single-box users
need no CI step). Afterwards only processes whose ``CRONBEAT_DEPLOYMENT_ID`` equals the
active id may claim triggers or start run attempts.

The fence is a shared transaction-level advisory lock, taken in the same transaction as
the claim it guards; activation takes the same lock exclusively before it updates the
row, so it waits for every claim in flight. A claim therefore either commits before the
activation (and counts as started before it) or reads the row after the activation
committed, sees the new active id, and stops. No superseded process can commit a claim
after ``activate`` returned. (An advisory lock rather than ``FOR SHARE`` on the row:
thousands of share-lockers of one row a minute would each write a tuple lock and churn
multixacts; advisory locks live in memory only.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.errors import PermanentError
from app.models import SchedulerState

_ROW = SchedulerState.id == 1
#: The advisory lock key of the fence ("cronbeat" in ASCII); nothing else uses it.
FENCE_LOCK_KEY = 0x63726F6E62656174


class Superseded(PermanentError):
    """This process's deployment is no longer the active one."""


@dataclasses.dataclass(frozen=True)
class State:
    generation: int
    active_deployment_id: str | None
    updated_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Activation:
    generation: int
    deployment_id: str
    #: False when the deployment was already the active one (a retried CI call).
    changed: bool


def may_run(active_deployment_id: str | None, deployment_id: str | None) -> bool:
    """Return whether a process of ``deployment_id`` may claim work (pure)."""
    return active_deployment_id is None or active_deployment_id == deployment_id


def read_state(session: Session) -> State:
    """Return the scheduler state without locking it."""
    row = session.execute(
        select(
            SchedulerState.generation,
            SchedulerState.active_deployment_id,
            SchedulerState.updated_at,
        ).where(_ROW)
    ).one()
    return State(row.generation, row.active_deployment_id, row.updated_at)


def fence(session: Session, deployment_id: str | None) -> State:
    """Hold the fence (shared) until commit; raise unless this deployment may run.

    Raises:
        Superseded: another deployment is the active one.
    """
    session.execute(select(func.pg_advisory_xact_lock_shared(FENCE_LOCK_KEY)))
    # Read after the lock was granted: under READ COMMITTED this statement sees any
    # activation that committed before it.
    row = session.execute(
        select(SchedulerState.generation, SchedulerState.active_deployment_id).where(_ROW)
    ).one()
    if not may_run(row.active_deployment_id, deployment_id):
        raise Superseded(
            f"deployment {deployment_id or '(unversioned)'} is superseded by "
            f"{row.active_deployment_id} (generation {row.generation})"
        )
    return State(row.generation, row.active_deployment_id)


def activate(session: Session, deployment_id: str) -> Activation:
    """Make ``deployment_id`` the active deployment; idempotent for the active one.

    Returns:
        The generation now in force, and whether this call changed it.
    """
    # Exclusive: waits until every claim holding the fence has committed, and keeps new
    # claims waiting until this commits.
    session.execute(select(func.pg_advisory_xact_lock(FENCE_LOCK_KEY)))
    # One conditional UPDATE: concurrent activations serialize on the lock and the last
    # one to commit wins. Activating the deployment that is already active matches
    # no row, so a retried CI call returns the same generation instead of bumping it.
    changed = session.execute(
        update(SchedulerState)
        .where(_ROW, SchedulerState.active_deployment_id.is_distinct_from(deployment_id))
        .values(
            generation=SchedulerState.generation + 1,
            active_deployment_id=deployment_id,
            updated_at=func.now(),
        )
        .returning(SchedulerState.generation)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if changed is not None:
        return Activation(changed, deployment_id, changed=True)
    return Activation(read_state(session).generation, deployment_id, changed=False)
