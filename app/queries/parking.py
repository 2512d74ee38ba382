"""Parked runs: pending, with no message, waiting in the database for a worker's free
delivery thread.

A run is parked when a tick records more runs than one batch
(:data:`app.firing.fairness.TICK_MESSAGES`), when it waited in a worker too long for a
thread, or when the optional hard cap (CRONBEAT_TENANT_MAX_RUNNING) holds it back. A
worker with free threads and no message waiting takes parked runs with
:func:`take_parked`: the same share of each tenant that has some, each tenant's oldest
first. So one tenant's burst waits here, not in the broker's FIFO queue ahead of the
others' messages, and no run goes round the broker while it waits.

Every function takes the caller's ``Session`` and never commits. Rows are locked
``SKIP LOCKED``: a row a claim, a cancel or another worker holds is left to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, String, bindparam, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.queries import attempt_sql as sql
from app.queries.attempt_sql import INV as _inv

#: The most tenants one take looks at: beyond it, the next takes see the others (the
#: tenants come in name order from the first one after the last seen).
MAX_TENANTS_PER_TAKE = 500


def _parked() -> tuple[Any, ...]:
    # ix_invocations_parked's predicate; and due: a run the tick took ahead of its instant
    # (app.firing.dispatch) and parked waits until then.
    return (_inv.c.status == InvocationStatus.PENDING, _inv.c.parked_at.is_not(None),
            or_(_inv.c.run_after.is_(None), _inv.c.run_after <= func.now()))


def _build_tenants() -> Any:
    # A skip scan of ix_invocations_parked: the first tenant after :b_after, then the
    # next after it, ... one index probe per tenant, however many runs each has parked.
    after = bindparam("b_after", type_=String)

    def first_after(value: Any) -> Any:
        return (select(_inv.c.tenant_id).where(*_parked(), _inv.c.tenant_id > value)
                .order_by(_inv.c.tenant_id).limit(1).scalar_subquery())

    tenants = select(first_after(after).label("tenant_id")).cte("tenants", recursive=True)
    tenants = tenants.union_all(
        select(first_after(tenants.c.tenant_id)).where(tenants.c.tenant_id.is_not(None)))
    return (select(tenants.c.tenant_id).where(tenants.c.tenant_id.is_not(None))
            .limit(bindparam("b_max", type_=Integer)))


def _build_take() -> Any:
    # Each listed tenant's oldest parked runs, ``b_each`` of them, locked.
    tenants = func.unnest(sql.array_param("b_tenants", String)).table_valued(
        "tenant_id").render_derived("t")
    oldest = (
        select(_inv.c.id, _inv.c.scheduled_for)
        .where(*_parked(), _inv.c.tenant_id == tenants.c.tenant_id)
        .order_by(_inv.c.parked_at)
        .limit(bindparam("b_each", type_=Integer))
        .with_for_update(skip_locked=True)
        .lateral("oldest")
    )
    return select(oldest.c.id, oldest.c.scheduled_for).select_from(
        tenants.join(oldest, literal_column("true")))


def _build_park() -> Any:
    locked = (select(_inv.c.id, _inv.c.scheduled_for.label("day"))
              .where(sql.in_batch(), _inv.c.status == InvocationStatus.PENDING,
                     _inv.c.cancel_requested.is_(False))
              .with_for_update(skip_locked=True).cte("locked"))
    return (update(_inv)
            .where(*sql.is_key(_inv.c.id, _inv.c.scheduled_for, locked.c.id, locked.c.day))
            .values(**sql.park_values())
            .returning(_inv.c.id, _inv.c.scheduled_for))


def _build_unpark() -> Any:
    return (update(_inv)
            .where(sql.in_batch(), *_parked())
            .values(parked_at=None, enqueued_at=func.now())
            .returning(_inv.c.id, _inv.c.scheduled_for))


_TENANTS = _build_tenants()
_TAKE = _build_take()
_PARK = _build_park()
_UNPARK = _build_unpark()


def take_parked(session: Session, limit: int, after: str = "") -> tuple[list[sql.Key], str]:
    """Lock up to ``limit`` parked runs, an equal share of each tenant that has some,
    each tenant's oldest first.

    The tenants are taken in name order from the first one after ``after``, then from
    the start again (at most MAX_TENANTS_PER_TAKE, and no more than ``limit``): the
    caller passes the tenant this returns, the last one taken from, to its next take,
    so with more tenants than a take serves each has its turn.

    Returns:
        The keys locked, and the last tenant taken from ("" if none).
    """
    if limit <= 0:
        return [], after
    connection = session.connection()
    most = min(limit, MAX_TENANTS_PER_TAKE)
    tenants = list(connection.execute(_TENANTS, {"b_after": after, "b_max": most}).scalars())
    if after and len(tenants) < most:
        tenants += [tenant for tenant in connection.execute(
            _TENANTS, {"b_after": "", "b_max": most - len(tenants)}).scalars()
            if tenant <= after and tenant not in tenants]
    if not tenants:
        return [], ""
    rows = connection.execute(_TAKE, {"b_tenants": tenants,
                                      "b_each": limit // len(tenants)}).all()
    return [(row[0], row[1]) for row in rows], tenants[-1]


def park(session: Session, keys: Sequence[sql.Key]) -> list[sql.Key]:
    """Park the pending runs of ``keys`` (their messages are done with: the caller acks
    them after the commit); the keys parked. A run with a cancel requested is left to
    its message, which closes it."""
    if not keys:
        return []
    rows = session.connection().execute(_PARK, sql.key_params(keys)).all()
    return [(row[0], row[1]) for row in rows]


def unpark(session: Session, keys: Sequence[sql.Key]) -> list[sql.Key]:
    """Mark the parked runs of ``keys`` as sent now (the caller publishes a message for
    each after the commit: the single-run path looks at what a batch cannot claim)."""
    if not keys:
        return []
    rows = session.connection().execute(_UNPARK, sql.key_params(keys)).all()
    return [(row[0], row[1]) for row in rows]
