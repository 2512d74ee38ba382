"""Deployments: which code's processes run, the fence that enforces it, and activation.

``scheduler_state`` holds one row: the active deployment id and a generation that counts
activations (and resets). Until a deployment is first activated, gating is off (single
boxes need no CI step). Afterwards only processes whose ``CRONBEAT_DEPLOYMENT_ID`` equals
the active id may claim triggers or start run attempts.

**The fence** is a lock held shared by every claiming transaction and exclusively by
an activation (:func:`app.queries.locks.fence_shared`, ``fence_exclusive``), so an
activation waits for every claim in flight. A claim therefore either commits before the
activation (and counts as started before it) or reads the row after the activation
committed, sees the new active id, and stops. No process of another deployment can
commit a claim after ``activate`` returned. (Not a share lock on the row: thousands of
share-lockers of one row a minute would each write a tuple lock and churn multixacts;
the fence's lock lives in memory only; see :mod:`app.queries.locks`.)

**Roles** (:func:`role_of`): the fence decides what may commit; a process's role decides
whether it asks at all. ``active`` processes consume and tick; a ``standby`` (its
deployment was never activated, and nothing was activated since it started) and a
``superseded`` process (another id was activated after its own, or after it started)
consume nothing and send no ticks. Both are functions of the state row, so the moment an
activation commits, exactly one deployment's processes are active: the fence stops the
old ones' claims in the same instant, and ``NOTIFY`` wakes every process to change its
role within milliseconds (:mod:`app.deploys.presence`).

**Guarded activation**: activating an id with no live worker and no live beat or
dispatcher (:mod:`app.deploys.processes`) is refused unless forced, so a typo cannot stop the
fleet. ``reset`` turns gating off again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import exists, false, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.deploys import processes
from app.enums import ProcessRole
from app.errors import Conflict, PermanentError
from app.models import Deployment, SchedulerState
from app.queries import locks

_ROW = SchedulerState.id == 1
#: The NOTIFY channel of activations and resets; the payload is the new generation.
DEPLOY_CHANNEL = "cronbeat_deploy"
DEPLOYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}")
DEPLOYMENT_ID_RULE = "1-100 of A-Z a-z 0-9 . _ : + -, starting with a letter or digit"


class Superseded(PermanentError):
    """This process's deployment is not the active one (superseded, or a standby)."""


class InvalidDeploymentId(PermanentError):
    """The deployment id must be 1-100 of A-Z a-z 0-9 . _ : + - (a git SHA, a tag)."""


class ActivationRefused(Conflict):
    """The deployment has no live processes to take over; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class State:
    generation: int
    active_deployment_id: str | None
    updated_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Activation:
    generation: int
    #: None after a reset (gating off).
    deployment_id: str | None
    #: False when nothing changed (a retried CI call; a reset with gating already off).
    changed: bool


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a process reads to know its role: the state, and its deployment's past."""

    generation: int
    active_deployment_id: str | None
    #: Whether this process's deployment was ever activated.
    was_activated: bool


def may_run(active_deployment_id: str | None, deployment_id: str | None) -> bool:
    """Return whether a process of ``deployment_id`` may claim work (pure)."""
    return active_deployment_id is None or active_deployment_id == deployment_id


def role_of(
    observation: Observation, deployment_id: str | None, registered_generation: int
) -> ProcessRole:
    """Return the role of a process of ``deployment_id`` that started at a generation (pure).

    A process that is not active is superseded when its deployment was activated before
    (so another one was activated after it) or when anything was activated since the
    process started; otherwise it is a standby waiting for its own activation.
    """
    if may_run(observation.active_deployment_id, deployment_id):
        return ProcessRole.ACTIVE
    if observation.was_activated or observation.generation > registered_generation:
        return ProcessRole.SUPERSEDED
    return ProcessRole.STANDBY


def check_deployment_id(deployment_id: object) -> str:
    """Return ``deployment_id`` if it is well-formed.

    Raises:
        InvalidDeploymentId: it is not.
    """
    if not isinstance(deployment_id, str) or not DEPLOYMENT_ID_PATTERN.fullmatch(deployment_id):
        raise InvalidDeploymentId()
    return deployment_id


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


def observe(session: processes.Executor, deployment_id: str | None) -> Observation:
    """Read what :func:`role_of` needs, in one statement, without locking."""
    was_activated = (
        exists().where(Deployment.deployment_id == deployment_id)
        if deployment_id is not None
        else false()
    )
    row = session.execute(
        select(
            SchedulerState.generation,
            SchedulerState.active_deployment_id,
            was_activated.label("was_activated"),
        ).where(_ROW)
    ).one()
    return Observation(row.generation, row.active_deployment_id, bool(row.was_activated))


def fence(session: Session, deployment_id: str | None) -> State:
    """Hold the fence (shared) until commit; raise unless this deployment may run.

    Raises:
        Superseded: another deployment is the active one.
    """
    locks.fence_shared(session)
    # Read after the lock was granted: under READ COMMITTED this statement sees any
    # activation that committed before it.
    row = session.execute(
        select(SchedulerState.generation, SchedulerState.active_deployment_id).where(_ROW)
    ).one()
    if not may_run(row.active_deployment_id, deployment_id):
        raise Superseded(
            f"deployment {deployment_id or '(unversioned)'} is not the active one "
            f"({row.active_deployment_id} is, generation {row.generation})"
        )
    return State(row.generation, row.active_deployment_id)


def activate(session: Session, deployment_id: str, *, force: bool = False) -> Activation:
    """Make ``deployment_id`` the active deployment; idempotent for the active one.

    Returns:
        The generation now in force, and whether this call changed it.

    Raises:
        InvalidDeploymentId: the id is malformed.
        ActivationRefused: the deployment has no live worker, or no live beat or
            dispatcher, and ``force`` is false. Nothing was changed.
    """
    check_deployment_id(deployment_id)
    # Exclusive: waits until every claim holding the fence has committed, and keeps new
    # claims waiting until this commits.
    _lock_exclusive(session)
    current = read_state(session)
    if current.active_deployment_id == deployment_id:
        # A retried CI call returns the same generation instead of bumping it.
        return Activation(current.generation, deployment_id, changed=False)
    if not force:
        missing = processes.missing_for_activation(processes.live(session, deployment_id))
        if missing:
            raise ActivationRefused(
                f"deployment {deployment_id} has no live {' and no live '.join(missing)}: "
                "start its processes first (they wait as standbys), or force the activation"
            )
    # Concurrent activations serialize on the lock; the last one to commit wins.
    generation = session.execute(
        update(SchedulerState)
        .where(_ROW)
        .values(generation=SchedulerState.generation + 1,
                active_deployment_id=deployment_id, updated_at=func.now())
        .returning(SchedulerState.generation)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.execute(
        insert(Deployment)
        .values(deployment_id=deployment_id, generation=generation)
        .on_conflict_do_update(
            index_elements=[Deployment.deployment_id],
            set_={"generation": generation, "last_activated_at": func.now()},
        )
    )
    _notify(session, generation)
    return Activation(generation, deployment_id, changed=True)


def reset(session: Session) -> Activation:
    """Turn gating off: every process of every deployment may run again (single boxes).

    Returns:
        The generation now in force, and whether gating was on before.
    """
    _lock_exclusive(session)
    generation = session.execute(
        update(SchedulerState)
        .where(_ROW, SchedulerState.active_deployment_id.is_not(None))
        .values(generation=SchedulerState.generation + 1, active_deployment_id=None,
                updated_at=func.now())
        .returning(SchedulerState.generation)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if generation is None:
        return Activation(read_state(session).generation, None, changed=False)
    _notify(session, generation)
    return Activation(generation, None, changed=True)


def _lock_exclusive(session: Session) -> None:
    locks.fence_exclusive(session)


def _notify(session: Session, generation: int) -> None:
    # Delivered at commit, so a process woken by it reads the committed state.
    session.execute(select(func.pg_notify(DEPLOY_CHANNEL, str(generation))))


@dataclasses.dataclass(frozen=True)
class DeploymentGroup:
    """One deployment id in ``deploy status``: its standing and its live processes."""

    deployment_id: str | None
    #: active, superseded (activated before, not now), or standby (never activated).
    standing: str
    last_activated_at: dt.datetime | None
    processes: list[processes.ProcessView]


@dataclasses.dataclass(frozen=True)
class DeployStatus:
    state: State
    groups: list[DeploymentGroup]


def status(session: Session) -> DeployStatus:
    """Return the active deployment, and each deployment with live processes (read only).

    The active deployment is always listed, with no processes if none is live.
    """
    state = read_state(session)
    live = processes.live(session)
    ids = {row.deployment_id for row in live}
    if state.active_deployment_id is not None:
        ids.add(state.active_deployment_id)
    known = {row.deployment_id: row.last_activated_at for row in session.execute(
        select(Deployment.deployment_id, Deployment.last_activated_at)
        .where(Deployment.deployment_id.in_([i for i in ids if i is not None]))
    )}
    groups = []
    for deployment_id in sorted(ids, key=lambda i: (i != state.active_deployment_id, i or "")):
        if may_run(state.active_deployment_id, deployment_id):
            standing = ProcessRole.ACTIVE.value
        elif deployment_id in known:
            standing = ProcessRole.SUPERSEDED.value
        else:
            standing = ProcessRole.STANDBY.value
        groups.append(DeploymentGroup(
            deployment_id, standing, known.get(deployment_id),
            [row for row in live if row.deployment_id == deployment_id],
        ))
    return DeployStatus(state, groups)
