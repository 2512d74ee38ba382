"""Advisory locks and id-ordered row locks; the order they are taken in is the package's
(:mod:`app.queries`)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
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
