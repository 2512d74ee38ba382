"""An attempt's one claim and one finish, for any number of runs (one is a batch of one).

Every run starts by :func:`claim_many` and ends by :func:`finish_many`: the delivery
engine's batches (tasks.engine, app.firing.batch) and the single-run path
(app.firing.runner) alike, so a run is claimed and finished under the same conditions,
against the same racers, whichever path takes it (the keys are ``unnest`` of array
parameters):

* :func:`claim_many` moves each due, pending, runnable invocation of the batch to
  running, inserts its attempt row and returns what its delivery needs. It locks the
  rows first with ``SKIP LOCKED``: a run another claim holds is left to the single-run
  path, so two batches sharing runs never wait on each other. A tenant's runs in the
  batch are ranked, and only those that keep the tenant under its cap are claimed
  (exact under :func:`lock_many`'s tenant locks). Keys it does not claim take the
  single-run path, which looks at each (duplicate, early, cancelled, capped, ...) and,
  past its checks, claims with this same statement.
* :func:`finish_many` records each attempt's outcome on its invocation, if the attempt
  still holds it, and on its attempt row, whether or not it does.

Both are built once at import; a call binds arrays and sends the SQL.
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
    Float,
    Integer,
    String,
    all_,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.queries import attempt_sql as sql
from app.queries.attempt_sql import ATT as _att
from app.queries.attempt_sql import INV as _inv
from app.queries.attempt_sql import TRG as _trg
from app.queries.attempt_sql import Claimed
from app.queries.locks import FENCE_LOCK_KEY, TENANT_RUNS_NAMESPACE, fence_shared

#: A key of a run: its invocation's id and day (scheduled_for).
Key = sql.Key


def _build_lock_tenants() -> Any:
    # Every tenant lock of the batch, taken in the order of its key, so two batches that
    # share tenants cannot wait on each other (the single-run path takes one tenant lock
    # only). OFFSET 0 keeps the sort below the lock calls.
    keys = (
        select(func.hashtext(_inv.c.tenant_id).label("key"))
        .where(sql.in_batch())
        .distinct()
        .order_by("key")
        .offset(0)
        .subquery("tenant_keys")
    )
    # Evaluated left to right on each row: the fence (taken again, shared, is free)
    # before every tenant lock.
    return select(
        func.pg_advisory_xact_lock_shared(FENCE_LOCK_KEY),
        func.pg_advisory_xact_lock(TENANT_RUNS_NAMESPACE, keys.c.key),
    ).select_from(keys)


def _build_claim_many() -> Any:
    deployment = bindparam("b_deployment_id", type_=String)
    cap = bindparam("b_tenant_cap", type_=Integer)
    # The batch's runnable rows, locked in this statement; a row another claim holds is
    # skipped, never waited for (it takes the single-run path), so two batches that
    # share runs (duplicate messages) cannot deadlock.
    locked = (
        select(_inv.c.id, _inv.c.scheduled_for.label("day"), _inv.c.tenant_id)
        .select_from(_inv.join(_trg, _trg.c.id == _inv.c.trigger_id))
        .where(
            sql.in_batch(),
            *sql.claimable(deployment),
            # A worker whose threads are all taken starts only the runs of tenants that
            # have none of its threads (tasks.engine, app.firing.fairness).
            _inv.c.tenant_id != all_(cast(
                bindparam("b_except_tenants", type_=ARRAY(String), value=[],
                          required=False), ARRAY(String))),
        )
        .with_for_update(of=_inv, skip_locked=True)
        .cte("locked")
    )
    candidates = select(
        locked.c.id,
        locked.c.day,
        func.row_number().over(partition_by=locked.c.tenant_id,
                               order_by=(locked.c.day, locked.c.id)).label("rank"),
        # Counted only under a cap: CASE evaluates the subquery only then.
        case((cap == 0, literal(0)), else_=sql.running_of(locked.c.tenant_id)).label("running"),
    ).cte("candidates")
    claimed = (
        update(_inv)
        .where(
            *sql.is_key(_inv.c.id, _inv.c.scheduled_for, candidates.c.id, candidates.c.day),
            _trg.c.id == _inv.c.trigger_id,
            # A tenant's runs in rank order, while they keep it under its cap (0: none),
            # exact under lock_many's tenant locks.
            or_(cap == 0, candidates.c.running + candidates.c.rank <= cap),
        )
        .values(**sql.claim_values(deployment))
        .returning(*sql.claim_returning())
        .cte("claimed")
    )
    return sql.with_attempt_rows(claimed, deployment)


def _build_park_capped() -> Any:
    # After claim_many, in its transaction (the tenants' locks held, its own claims
    # counted): the batch's runs that only their tenant's cap kept from running are
    # parked (app.queries.parking): they wait in the database, with no message, until a
    # worker with a free thread takes them under the cap. Rows another claim holds are
    # skipped.
    deployment = bindparam("b_deployment_id", type_=String)
    capped = (
        select(_inv.c.id, _inv.c.scheduled_for.label("day"))
        .select_from(_inv.join(_trg, _trg.c.id == _inv.c.trigger_id))
        .where(
            sql.in_batch(),
            *sql.claimable(deployment),
            sql.running_of(_inv.c.tenant_id) >= bindparam("b_tenant_cap", type_=Integer),
        )
        .with_for_update(of=_inv, skip_locked=True)
        .cte("capped")
    )
    return (
        update(_inv)
        .where(
            *sql.is_key(_inv.c.id, _inv.c.scheduled_for, capped.c.id, capped.c.day),
        )
        .values(**sql.park_values())
        .returning(_inv.c.id, _inv.c.scheduled_for)
    )


#: The per-outcome columns of a finish, in the order of finish_many's arrays.
_FINISH_COLUMNS = (
    ("id", None), ("day", DateTime(timezone=True)), ("attempt", Integer),
    ("retry", Boolean), ("delay_s", Float), ("published", Boolean), ("status", String),
    ("error", String), ("attempt_error", String), ("lost_error", String),
    ("outcome", String), ("response_status", Integer), ("response_excerpt", String),
)


def _build_finish_many() -> Any:
    arrays = [sql.ids_param("b_id") if item is None else sql.array_param(f"b_{name}", item)
              for name, item in _FINISH_COLUMNS]
    rows = select(
        *func.unnest(*arrays).table_valued(*(name for name, _ in _FINISH_COLUMNS))
        .render_derived("f").c
    ).cte("finishes")
    finished = (
        update(_inv)
        .where(
            *sql.is_key(_inv.c.id, _inv.c.scheduled_for, rows.c.id, rows.c.day),
            _inv.c.status == InvocationStatus.RUNNING,
            _inv.c.attempt == rows.c.attempt,
        )
        .values(**sql.finish_values(
            retry=rows.c.retry, delay_s=rows.c.delay_s, published=rows.c.published,
            status=rows.c.status, error=rows.c.error, response_status=rows.c.response_status,
            response_excerpt=rows.c.response_excerpt,
        ))
        .returning(_inv.c.id, _inv.c.attempt, _inv.c.status)
        .cte("finished")
    )
    outcomes = (
        select(rows, finished.c.status.label("left_status"))
        .select_from(rows.outerjoin(finished, and_(finished.c.id == rows.c.id,
                                                   finished.c.attempt == rows.c.attempt)))
        .subquery("outcomes")
    )
    return (
        update(_att)
        .where(
            *sql.is_key(_att.c.invocation_id, _att.c.scheduled_for, outcomes.c.id, outcomes.c.day),
            _att.c.number == outcomes.c.attempt,
        )
        .values(**sql.attempt_finish_values(
            held=outcomes.c.left_status.is_not(None), outcome=outcomes.c.outcome,
            response_status=outcomes.c.response_status,
            attempt_error=outcomes.c.attempt_error, lost_error=outcomes.c.lost_error,
        ))
        .returning(_att.c.invocation_id, _att.c.number, outcomes.c.left_status)
    )


_LOCK_TENANTS = _build_lock_tenants()
_CLAIM_MANY = _build_claim_many()
_FINISH_MANY = _build_finish_many()
_PARK_CAPPED = _build_park_capped()


def lock_many(session: Session, keys: Sequence[sql.Key], tenant_cap: int) -> None:
    """Hold the deploy fence (shared) and, with a tenant cap, the batch's tenants' locks.

    All until commit, in one round trip; the fence first (lock order 1), then the
    tenants (4).
    """
    if not tenant_cap or not session.connection().execute(
            _LOCK_TENANTS, sql.key_params(keys)).all():
        # No cap, or none of the keys found: the fence alone.
        fence_shared(session)


def claim_many(
    session: Session, keys: Sequence[sql.Key], deployment_id: str | None, tenant_cap: int,
    leased_by: uuid.UUID | None = None, *, overlap_checked: bool = False,
    except_tenants: Sequence[str] = (),
) -> list[Claimed]:
    """Claim every run of ``keys`` that is claimable (attempt_sql.claimable), as a new
    attempt each, leased by worker ``leased_by``.

    The caller holds :func:`lock_many`'s locks. ``overlap_checked``: the caller looked
    for another running run of each key's trigger under its run lock (the single-run
    path does, for overlap ``skip``). ``except_tenants``: claim no run of these. Keys
    not in the result were not claimed.
    """
    if not keys:
        return []
    rows = session.connection().execute(_CLAIM_MANY, {
        **sql.key_params(keys), "b_deployment_id": deployment_id, "b_tenant_cap": tenant_cap,
        "b_leased_by": leased_by, "b_overlap_checked": overlap_checked,
        "b_except_tenants": list(except_tenants),
    }).all()
    return [Claimed.of(row._mapping) for row in rows]


def park_capped(
    session: Session, keys: Sequence[sql.Key], deployment_id: str | None, tenant_cap: int,
    *, overlap_checked: bool = False,
) -> list[sql.Key]:
    """Of ``keys`` (runs :func:`claim_many` did not claim, in its transaction), park
    those that only their tenant's cap keeps from running; their keys. A parked run has
    no message: its own is done with, and a worker takes the run from the database once
    its tenant is under the cap (app.queries.parking)."""
    if not keys or not tenant_cap:
        return []
    rows = session.connection().execute(_PARK_CAPPED, {
        **sql.key_params(keys), "b_deployment_id": deployment_id, "b_tenant_cap": tenant_cap,
        "b_overlap_checked": overlap_checked,
    }).all()
    return [(row[0], row[1]) for row in rows]


@dataclasses.dataclass(frozen=True)
class Finish:
    """How one attempt ended."""

    invocation_id: uuid.UUID
    scheduled_for: dt.datetime
    attempt: int
    status: InvocationStatus | None
    retry_delay_s: float | None
    published: bool
    error: str | None
    attempt_error: str | None
    lost_error: str
    outcome: str
    response_status: int | None
    response_excerpt: str | None


def finish_many(
    session: Session, finishes: Sequence[Finish]
) -> list[InvocationStatus | None]:
    """Record how each attempt ended; each invocation's new status, None if lost.

    Either ``status`` (final) or ``retry_delay_s`` (back to pending) is given; a retry
    whose cancel was requested meanwhile ends cancelled. ``attempt_error`` goes on the
    attempt row if the attempt still held the invocation, ``lost_error`` if not. The
    result is in the order of ``finishes``.
    """
    if not finishes:
        return []
    for item in finishes:
        assert (item.retry_delay_s is not None) != (item.status is not None)
    params: dict[str, Any] = {
        "b_id": [str(item.invocation_id) for item in finishes],
        "b_day": [item.scheduled_for for item in finishes],
        "b_attempt": [item.attempt for item in finishes],
        "b_retry": [item.retry_delay_s is not None for item in finishes],
        "b_delay_s": [item.retry_delay_s or 0.0 for item in finishes],
        "b_published": [item.published for item in finishes],
        "b_status": [(item.status or InvocationStatus.FAILED).value for item in finishes],
        "b_error": [item.error for item in finishes],
        "b_attempt_error": [item.attempt_error for item in finishes],
        "b_lost_error": [item.lost_error for item in finishes],
        "b_outcome": [item.outcome for item in finishes],
        "b_response_status": [item.response_status for item in finishes],
        "b_response_excerpt": [item.response_excerpt for item in finishes],
        "b_days": sorted({item.scheduled_for for item in finishes}),
    }
    rows = session.connection().execute(_FINISH_MANY, params).all()
    left = {(row[0], row[1]): None if row[2] is None else InvocationStatus(row[2])
            for row in rows}
    return [left.get((item.invocation_id, item.attempt)) for item in finishes]
