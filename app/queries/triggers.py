"""Locking a project's triggers: in id order, after the project's lock (see the package)."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models import Trigger
from app.queries.locks import lock_project


def project_triggers(session: Session, tenant_id: str, project_id: str, *,
                     lock: bool) -> list[Trigger]:
    """Every trigger of the project; with ``lock``, the project's lock and then its rows.

    Two calls that lock (a sync and a delete by ref, or two syncs) run one after the
    other; rows are locked in id order.
    """
    if lock:
        lock_project(session, tenant_id, project_id)
    statement = _of_project(tenant_id, project_id).order_by(Trigger.id)
    if lock:
        statement = statement.with_for_update()
    return list(session.execute(statement).scalars())


def project_triggers_with_ref(session: Session, tenant_id: str, project_id: str,
                              ref: str) -> list[Trigger]:
    """The project's triggers carrying ``ref``, locked as :func:`project_triggers` locks."""
    lock_project(session, tenant_id, project_id)
    return list(session.execute(
        _of_project(tenant_id, project_id).where(Trigger.ref == ref)
        .order_by(Trigger.id).with_for_update()
    ).scalars())


def one_trigger(session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
                lock: bool) -> Trigger | None:
    """The project's trigger ``trigger_id`` (locked until commit if ``lock``), or None."""
    statement = _of_project(tenant_id, project_id).where(Trigger.id == trigger_id)
    if lock:
        statement = statement.with_for_update()
    return session.execute(statement).scalar_one_or_none()


def _of_project(tenant_id: str, project_id: str) -> Select[tuple[Trigger]]:
    return select(Trigger).where(Trigger.tenant_id == tenant_id,
                                 Trigger.project_id == project_id)
