"""The lock order: every transaction that locks several rows takes them in this order.

Two transactions that lock overlapping rows in different orders can deadlock, and
PostgreSQL then aborts one of them (an API call answers 500). So every multi-row lock
here is taken in one global order, and by primary key within a table:

=====  ==========================================  =======================================
order  lock                                        taken by
=====  ==========================================  =======================================
1      the deploy fence (advisory, shared or       every claim; activation, reset
       exclusive; :mod:`app.deploy`)
2      one project (advisory, :func:`lock_project`) sync; delete by ref
3      triggers, ``ORDER BY id`` ``FOR UPDATE``    sync; delete by ref; single-row edits
4      one trigger's runs (advisory,               the run path's overlap check
       :func:`app.leases.lock_trigger_runs`)
5      invocations, ``ORDER BY id`` ``FOR UPDATE``  cancels (:mod:`app.cancellation`);
       (:func:`by_id`), or ``SKIP LOCKED``          mark_published, the dispatcher's claims
                                                   and the sweep never wait
=====  ==========================================  =======================================

A statement that only needs rows nobody else holds uses ``SKIP LOCKED`` and never
waits, so it can be part of no deadlock at all.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from app.models import Invocation


def project_lock_key(tenant_id: str, project_id: str) -> int:
    """The advisory-lock key of one project (a signed 64-bit hash of its ids)."""
    digest = hashlib.sha256(f"cronbeat.sync:{tenant_id}/{project_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_project(session: Session, tenant_id: str, project_id: str) -> None:
    """Hold the project's lock until commit: its multi-trigger edits run one at a time."""
    session.execute(select(func.pg_advisory_xact_lock(project_lock_key(tenant_id, project_id))))


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
