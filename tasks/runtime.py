"""What a task needs from its process: settings, a session factory, the Celery app.

Built once per process, lazily, so a prefork child opens its own connections after the
fork and importing this module opens none.
"""

from __future__ import annotations

import dataclasses
import functools

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import make_engine, make_session_factory


@dataclasses.dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]


@functools.cache
def get_runtime() -> Runtime:
    """Return this process's runtime, built from the environment on first use."""
    settings = Settings.from_env()
    engine = make_engine(settings)
    return Runtime(settings=settings, engine=engine, sessions=make_session_factory(engine))
