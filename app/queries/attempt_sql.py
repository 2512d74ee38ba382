"""The pieces the attempt's one claim and one finish are built of, and what a claim returns.

:mod:`app.queries.attempts` builds the statements (for any number of runs: one is a
batch of one); what is claimable, what a claim sets and returns, and how a finish's
outcome becomes the invocation's new state are written here, once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from app.enums import InvocationStatus, OverlapPolicy
from app.models import AlertChannel, Invocation, InvocationAttempt, SchedulerState, Trigger
from app.queries.leases import LEASE_GRACE_S

INV = Invocation.__table__
TRG = Trigger.__table__
ATT = InvocationAttempt.__table__
STATE = SchedulerState.__table__
CHANNELS = AlertChannel.__table__

#: The trigger's columns a delivery reads, returned by the claim.
TARGET_COLUMNS = (
    "name", "payload", "message_template", "target_kind", "task_name", "task_queue",
    "task_args", "task_kwargs", "task_envelope", "task_outcome", "webhook_url",
    "webhook_method",
    "webhook_headers", "signing_secret", "timeout_s", "max_attempts", "backoff_base_s",
    "backoff_cap_s",
)


#: A key of a run: its invocation's id and day (scheduled_for).
Key = tuple[uuid.UUID, dt.datetime]


def array_param(name: str, item: Any) -> Any:
    """An array parameter of ``item``s. Cast, because psycopg2 sends a list as
    ARRAY[...] of literals, whose type PostgreSQL guesses (text[] when every item is
    NULL)."""
    return cast(bindparam(name, type_=ARRAY(item)), ARRAY(item))


def ids_param(name: str) -> Any:
    """A uuid[] parameter: psycopg2 sends a list of strings as text[], cast here."""
    return cast(bindparam(name, type_=ARRAY(String)), ARRAY(UUID(as_uuid=True)))


def is_key(id_column: Any, day_column: Any, key_id: Any, key_day: Any) -> tuple[Any, ...]:
    """A history row's (id, day) is a key of the batch (another relation's columns),
    its day among the batch's days, so PostgreSQL reads only those days' partitions."""
    return (id_column == key_id, day_column == key_day,
            day_column == any_(array_param("b_days", DateTime(timezone=True))))


def in_batch() -> Any:
    """The batch's invocations: ``id = ANY(:b_ids)``, pruned to the batch's days."""
    return and_(INV.c.id == any_(ids_param("b_ids")),
                INV.c.scheduled_for == any_(array_param("b_days", DateTime(timezone=True))))


def key_params(keys: Sequence[Key]) -> dict[str, Any]:
    """The parameters of :func:`in_batch` for ``keys``."""
    return {"b_ids": [str(invocation_id) for invocation_id, _ in keys],
            "b_days": sorted({day for _, day in keys})}


def park_values() -> dict[str, Any]:
    """What parking a pending run sets: it waits in the database for a worker's free
    thread, with no message (app.queries.parking)."""
    return {"parked_at": func.now(), "enqueued_at": None}


def seconds(column: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, column)


def running_of(tenant_id: Any) -> Any:
    """How many of the tenant's invocations run now (ix_invocations_running_tenant)."""
    running = INV.alias("running")
    return (
        select(func.count())
        .select_from(running)
        .where(running.c.tenant_id == tenant_id, running.c.status == InvocationStatus.RUNNING)
        .scalar_subquery()
    )


def may_run(deployment: Any) -> Any:
    """This process's deployment is the active one, or none is (the deploy fence's rule)."""
    return exists(
        select(literal(1)).select_from(STATE).where(
            STATE.c.id == 1,
            or_(STATE.c.active_deployment_id.is_(None),
                STATE.c.active_deployment_id == deployment),
        )
    )


def not_pausable() -> Any:
    """The trigger's kind is not pausable (app.schedule.kinds.Schedule.pausable, in SQL):
    a one-time trigger, whose ``enabled = false`` also means "fired"."""
    return TRG.c.run_at.is_not(None)


def overlap_checked() -> Any:
    """Whether the caller looked for another running run of the trigger under its run
    lock already (the single-run path, for overlap ``skip``); false for a batch."""
    return bindparam("b_overlap_checked", type_=Boolean, value=False, required=False)


def claimable(deployment: Any) -> tuple[Any, ...]:
    """What may be claimed (the invocation joined with its trigger): pending and due, no
    cancel requested, a runnable trigger (enabled, or the run is manual, or its kind
    is not pausable), and this deployment may run. A trigger whose
    overlap policy is ``skip`` or ``buffer_one`` only once its runs were looked at under
    their lock (:func:`overlap_checked`)."""
    return (
        INV.c.status == InvocationStatus.PENDING,
        or_(INV.c.run_after.is_(None), INV.c.run_after <= func.now()),
        INV.c.cancel_requested.is_(False),
        or_(TRG.c.enabled, INV.c.manual, not_pausable()),
        or_(and_(TRG.c.overlap_policy != OverlapPolicy.SKIP,
                 TRG.c.overlap_policy != OverlapPolicy.BUFFER_ONE), overlap_checked()),
        may_run(deployment),
    )


def watched() -> Any:
    """Whether the run's outcome may raise an alert (app.alerting), read by the claim, so
    a project without an alert channel costs no statement more."""
    return exists(
        select(literal(1)).select_from(CHANNELS).where(
            CHANNELS.c.tenant_id == INV.c.tenant_id, CHANNELS.c.project_id == INV.c.project_id,
            CHANNELS.c.enabled,
        )
    ).label("watched")


def leased_by() -> Any:
    """The claiming worker's registry id (None outside a worker: a test, the CLI)."""
    return bindparam("b_leased_by", type_=UUID(as_uuid=True), value=None, required=False)


def claim_values(deployment: Any) -> dict[str, Any]:
    """What a claim sets on the invocation (joined with its trigger)."""
    return {
        "status": InvocationStatus.RUNNING,
        "attempt": INV.c.attempt + 1,
        "lease_expires_at": func.now() + seconds(TRG.c.timeout_s + LEASE_GRACE_S),
        "started_at": func.now(),
        "deployment_id": deployment,
        "leased_by": leased_by(),
        "parked_at": None,
    }


def claim_returning() -> tuple[Any, ...]:
    """What a claim returns: the attempt, its invocation's key and ids, the target."""
    return (
        INV.c.id, INV.c.attempt, INV.c.started_at, INV.c.scheduled_for,
        INV.c.occurrence_at, INV.c.tenant_id, INV.c.project_id, INV.c.trigger_id,
        INV.c.manual, watched(),
        *(TRG.c[name] for name in TARGET_COLUMNS),
    )


def with_attempt_rows(claimed: Any, deployment: Any) -> Any:
    """Select the claimed rows, inserting each one's attempt row on the way."""
    attempt_rows = insert(ATT).from_select(
        ["invocation_id", "scheduled_for", "number", "deployment_id", "started_at"],
        select(claimed.c.id, claimed.c.scheduled_for, claimed.c.attempt, deployment,
               claimed.c.started_at),
    ).cte("attempt_rows")
    return select(claimed).add_cte(attempt_rows)


def finish_values(
    *, retry: Any, delay_s: Any, published: Any, status: Any, error: Any,
    response_status: Any, response_excerpt: Any,
) -> dict[str, Any]:
    """What a finish sets on the invocation its attempt still holds.

    A retry returns it to pending, unless a cancel was requested meanwhile; a retry
    published at once counts as sent now, one left to the dispatcher (a long wait,
    app.firing.outcome.plan_finish) keeps enqueued_at NULL until it is.
    """
    cancel = INV.c.cancel_requested.is_(True)
    retrying = and_(retry, not_(cancel))
    return {
        "status": case(
            (retrying, InvocationStatus.PENDING.value),
            (retry, InvocationStatus.CANCELLED.value),
            else_=status,
        ),
        "run_after": case(
            (retrying, func.now() + seconds(delay_s)),
            (retry, None),
            else_=INV.c.run_after,
        ),
        "finished_at": case((retrying, None), else_=func.now()),
        "enqueued_at": case(
            (and_(retrying, published), func.now()),
            (retrying, None),
            else_=INV.c.enqueued_at,
        ),
        "lease_expires_at": None,
        "last_error": case(
            (and_(retry, cancel), "cancelled: cancel requested during a retry"),
            else_=error,
        ),
        "response_status": response_status,
        "response_excerpt": response_excerpt,
    }


#: How the error of an attempt that finished after the sweep took its lease back ends
#: (its outcome was "abandoned" first; /metrics keeps counting it so).
TAKEN_BACK_NOTE = "finished after its lease was taken back"


def attempt_finish_values(
    *, held: Any, outcome: Any, response_status: Any, attempt_error: Any, lost_error: Any,
) -> dict[str, Any]:
    """What a finish sets on the attempt's own row, whether or not the attempt still held
    its invocation: the attempt row is the attempt's own history, and what really
    happened (a late success explains a second delivery) beats the sweep's
    "abandoned"; ``lost_error`` says the lease was lost."""
    return {
        "outcome": outcome,
        "response_status": response_status,
        "error": case((held, attempt_error), else_=lost_error),
        "finished_at": func.now(),
    }


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """The trigger's columns a delivery reads (TARGET_COLUMNS), as of the claim."""

    name: str
    payload: Any
    message_template: str | None
    target_kind: Any
    task_name: str | None
    task_queue: str | None
    task_args: Any
    task_kwargs: Any
    task_envelope: bool
    task_outcome: bool
    webhook_url: str | None
    webhook_method: str | None
    webhook_headers: Any
    signing_secret: str | None
    timeout_s: int
    max_attempts: int
    backoff_base_s: Any
    backoff_cap_s: Any

    @classmethod
    def of(cls, source: Any) -> TargetRow:
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
    target: TargetRow
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
            target=TargetRow.of(values),
            manual=values["manual"],
            watched=values["watched"],
        )
