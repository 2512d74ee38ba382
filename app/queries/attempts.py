"""An attempt's two statements: claim it (with its attempt row) and finish it.

The common path of a run costs one statement to start and one to finish, each built
once at import (SQLAlchemy caches their compiled form, so a call binds values and sends
the SQL). Both are the conditional writes of :mod:`app.queries.leases` folded together
with data-modifying CTEs, and safe against the same racers for the same reasons:

* :func:`claim` moves a due, pending, runnable invocation to running, inserts its
  attempt row, and returns everything the delivery needs, in one statement. It claims
  only what the slow path (:mod:`app.firing.runner`) would claim without looking further:
  the trigger exists and is runnable, the overlap policy is not ``skip`` (which takes a
  lock first), no cancel is requested, and this process's deployment is the active one
  (read in this statement's snapshot, taken after the caller holds the deploy fence).
  Anything else returns no row, and the caller takes the slow path.
* :func:`finish` records the outcome on the invocation, if the attempt still holds it,
  and on the attempt row, whether or not it does, in one statement.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.queries import attempt_sql as sql
from app.queries.attempt_sql import ATT as _att
from app.queries.attempt_sql import INV as _inv
from app.queries.attempt_sql import TARGET_COLUMNS
from app.queries.attempt_sql import TRG as _trg
from app.queries.locks import FENCE_LOCK_KEY, TENANT_RUNS_NAMESPACE, fence_shared


def _this_invocation() -> Any:
    """``id = :b_invocation_id``, and its day when the caller knows it.

    With ``b_scheduled_for`` NULL the second term folds to true when PostgreSQL plans
    the statement; with a value it prunes the history to that day's partition.
    """
    scheduled_for = bindparam("b_scheduled_for", type_=DateTime(timezone=True))
    return and_(_inv.c.id == bindparam("b_invocation_id"),
                or_(scheduled_for.is_(None), _inv.c.scheduled_for == scheduled_for))


_LOCK_FOR_CLAIM = select(
    # Evaluated left to right: the fence first (lock order 1), then the tenant (4).
    func.pg_advisory_xact_lock_shared(FENCE_LOCK_KEY),
    func.pg_advisory_xact_lock(TENANT_RUNS_NAMESPACE, func.hashtext(_inv.c.tenant_id)),
).where(_this_invocation())


def lock_for_claim(
    session: Session, invocation_id: uuid.UUID, tenant_cap: int,
    scheduled_for: dt.datetime | None = None,
) -> None:
    """Hold the deploy fence (shared) and, with a tenant cap, the tenant's claim lock.

    Both until commit, in one round trip. The tenant's lock makes the cap exact: the
    claim counts the tenant's running invocations in a snapshot taken after every
    earlier claim of the tenant committed. An unknown id takes the fence alone.
    """
    if not tenant_cap:
        fence_shared(session)
        return
    found = session.connection().execute(
        _LOCK_FOR_CLAIM, {"b_invocation_id": invocation_id, "b_scheduled_for": scheduled_for}
    ).first()
    if found is None:
        fence_shared(session)


def tenant_running(session: Session, tenant_id: str) -> int:
    """How many of ``tenant_id``'s invocations are running now."""
    count = select(sql.running_of(literal(tenant_id)))
    return int(session.connection().execute(count).scalar_one())


def defer(session: Session, invocation_id: uuid.UUID, delay_s: float) -> bool:
    """Leave a pending invocation for ``delay_s`` (its tenant is at its cap); True if done.

    Its message is published again with that countdown right after the commit, so it
    counts as sent now.
    """
    statement = (
        update(_inv)
        .where(_inv.c.id == invocation_id, _inv.c.status == InvocationStatus.PENDING)
        .values(run_after=func.now() + sql.seconds(literal(delay_s, Float)),
                enqueued_at=func.now())
    )
    return session.connection().execute(statement).rowcount == 1


def _build_claim() -> Any:
    deployment = bindparam("b_deployment_id", type_=String)
    cap = bindparam("b_tenant_cap", type_=Integer)
    claimed = (
        update(_inv)
        .where(
            _this_invocation(),
            _trg.c.id == _inv.c.trigger_id,
            *sql.claimable(deployment),
            # The tenant's cap (0: none), exact under lock_for_claim's tenant lock.
            or_(cap == 0, sql.running_of(_inv.c.tenant_id) < cap),
        )
        .values(**sql.claim_values(deployment))
        .returning(*sql.claim_returning())
        .cte("claimed")
    )
    return sql.with_attempt_rows(claimed, deployment)


def _build_finish() -> Any:
    def param(name: str, type_: Any) -> Any:
        return bindparam(f"b_{name}", type_=type_)

    finished = (
        update(_inv)
        .where(
            _inv.c.id == bindparam("b_invocation_id"),
            _inv.c.scheduled_for == bindparam("b_scheduled_for"),
            _inv.c.status == InvocationStatus.RUNNING,
            _inv.c.attempt == param("attempt", Integer),
        )
        .values(**sql.finish_values(
            retry=param("retry", Boolean), delay_s=param("delay_s", Float),
            published=param("published", Boolean), status=param("status", String),
            error=param("error", String), response_status=param("response_status", Integer),
            response_excerpt=param("response_excerpt", String),
        ))
        .returning(_inv.c.status)
        .cte("finished")
    )
    return (
        update(_att)
        .where(
            _att.c.invocation_id == bindparam("b_invocation_id"),
            _att.c.scheduled_for == bindparam("b_scheduled_for"),
            _att.c.number == param("attempt", Integer),
        )
        .values(**sql.attempt_finish_values(
            held=exists(select(finished.c.status)), outcome=param("outcome", String),
            response_status=param("response_status", Integer),
            attempt_error=param("attempt_error", String),
            lost_error=param("lost_error", String),
        ))
        .returning(select(finished.c.status).scalar_subquery())
    )


_CLAIM = _build_claim()
_FINISH = _build_finish()


@dataclasses.dataclass(frozen=True)
class Target:
    """The trigger's columns a delivery reads (TARGET_COLUMNS), as of the claim."""

    name: str
    payload: Any
    message_template: str | None
    target_kind: Any
    task_name: str | None
    task_queue: str | None
    webhook_url: str | None
    webhook_method: str | None
    webhook_headers: Any
    signing_secret: str | None
    timeout_s: int
    max_attempts: int
    backoff_base_s: Any
    backoff_cap_s: Any

    @classmethod
    def of(cls, source: Any) -> Target:
        """Read the columns from a row mapping or a Trigger."""
        get = source.__getitem__ if hasattr(source, "__getitem__") else source.__getattribute__
        return cls(**{name: get(name) for name in TARGET_COLUMNS})


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A claimed attempt and the trigger's columns its delivery reads."""

    invocation_id: uuid.UUID
    attempt: int
    started_at: dt.datetime
    scheduled_for: dt.datetime
    occurrence_at: dt.datetime | None
    tenant_id: str
    project_id: str
    trigger_id: uuid.UUID
    target: Target
    #: A manual run (run now, replay, backfill): its outcome raises no alert.
    manual: bool = False
    #: The project has an enabled alert channel (app.alerting).
    watched: bool = False

    @classmethod
    def of(cls, values: Any) -> Claimed:
        """Read a claim statement's returned row (attempt_sql.claim_returning)."""
        return cls(
            invocation_id=values["id"],
            attempt=values["attempt"],
            started_at=values["started_at"],
            scheduled_for=values["scheduled_for"],
            occurrence_at=values["occurrence_at"],
            tenant_id=values["tenant_id"],
            project_id=values["project_id"],
            trigger_id=values["trigger_id"],
            target=Target.of(values),
            manual=values["manual"],
            watched=values["watched"],
        )


def claim(
    session: Session, invocation_id: uuid.UUID, deployment_id: str | None, tenant_cap: int,
    scheduled_for: dt.datetime | None = None, leased_by: uuid.UUID | None = None,
) -> Claimed | None:
    """Claim the invocation as a new attempt if the common path allows; None otherwise.

    The caller holds :func:`lock_for_claim`'s locks already. ``tenant_cap`` is
    CRONBEAT_TENANT_MAX_RUNNING (0: no cap); ``leased_by`` the claiming worker's
    registry id.
    """
    row = session.connection().execute(
        _CLAIM, {"b_invocation_id": invocation_id, "b_deployment_id": deployment_id,
                 "b_tenant_cap": tenant_cap, "b_scheduled_for": scheduled_for,
                 "b_leased_by": leased_by}
    ).first()
    if row is None:
        return None
    return Claimed.of(row._mapping)


def finish(
    session: Session,
    invocation_id: uuid.UUID,
    scheduled_for: dt.datetime,
    attempt: int,
    *,
    status: InvocationStatus | None,
    retry_delay_s: float | None,
    published: bool,
    error: str | None,
    attempt_error: str | None,
    lost_error: str,
    outcome: str,
    response_status: int | None,
    response_excerpt: str | None,
) -> InvocationStatus | None:
    """Record how attempt ``attempt`` ended; the invocation's new status, None if lost.

    Either ``status`` (final) or ``retry_delay_s`` (back to pending) is given; a retry
    whose cancel was requested meanwhile ends cancelled. ``attempt_error`` goes on the
    attempt row if the attempt still held the invocation, ``lost_error`` if not.
    """
    retry = retry_delay_s is not None
    assert retry != (status is not None), "a final status or a retry, not both"
    assert status is None or status.is_final
    result = session.connection().execute(_FINISH, {
        "b_invocation_id": invocation_id,
        "b_scheduled_for": scheduled_for,
        "b_attempt": attempt,
        "b_retry": retry,
        "b_delay_s": retry_delay_s or 0.0,
        "b_published": published,
        "b_status": status.value if status else InvocationStatus.FAILED.value,
        "b_error": error,
        "b_attempt_error": attempt_error,
        "b_lost_error": lost_error,
        "b_outcome": outcome,
        "b_response_status": response_status,
        "b_response_excerpt": response_excerpt,
    }).scalar()
    return None if result is None else InvocationStatus(result)
