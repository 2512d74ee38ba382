"""What the views need from the app: settings, sessions and the Celery app, built once."""

from __future__ import annotations

import dataclasses
import datetime as dt

from celery import Celery
from flask import current_app
from sqlalchemy import Engine
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


def utcnow() -> dt.datetime:
    """Read the clock: a request does it once, at its edge, and passes ``now`` down."""
    return dt.datetime.now(dt.UTC)
