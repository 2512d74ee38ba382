"""What the views need from the app: settings, sessions and the Celery app, built once."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator

from celery import Celery
from flask import current_app
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings


@dataclasses.dataclass(frozen=True)
class ApiState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery


def state() -> ApiState:
    """Return the current app's state (set up by ``create_app``)."""
    return current_app.extensions["cronbeat"]


def db_now(session: Session) -> dt.datetime:
    """Read the clock: the database's ``now()``, in the request's transaction, in UTC.

    The dispatcher and the workers take their time from the database, so the API does
    too: a web host whose clock is off must not arm a next_run_at the dispatcher sees
    differently, or stamp a row earlier than the runs around it. A request reads it once,
    at its edge, and passes ``now`` down (``now()`` is the transaction's start anyway).
    """
    return session.execute(select(func.now())).scalar_one().astimezone(dt.UTC)


@contextlib.contextmanager
def transaction() -> Iterator[tuple[Session, dt.datetime]]:
    """Open the request's one transaction and read its clock: ``(session, now)``."""
    with state().sessions.begin() as session:
        yield session, db_now(session)
