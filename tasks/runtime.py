"""What a task needs from its process: settings, a session factory, the Celery app.

Built once per process, lazily, so a prefork child opens its own connections after the
fork and importing this module opens none. A worker sizes it first
(:func:`configure_for_worker`): a fixed budget of CRONBEAT_WORKER_DB_POOL connections
whatever its thread counts (a thread that finds them all in use waits for one, and says
so in the log), no pre-ping (a unit of work on a dead connection is tried again
instead), and a statement timeout.
"""

from __future__ import annotations

import dataclasses
import functools

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import make_engine, make_session_factory

#: A worker's statements are small (one invocation's claim or finish); one that runs
#: this long, or a transaction left open this long, is ended by PostgreSQL. It stands
#: in for the prefork pool's hard time limit, which threads do not have.
WORKER_STATEMENT_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    # A process running one task at a time (a CLI tick, beat): a tick's transactions one
    # after another, beside its publisher thread's; four connections at most.
    pool_size: int = 2
    max_overflow: int = 2
    pre_ping: bool = True
    statement_timeout_s: int | None = None
    wait_for_connection: bool = False


_OPTIONS = [EngineOptions()]


@dataclasses.dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]


@functools.cache
def get_settings() -> Settings:
    """This process's settings, read from the environment once."""
    return Settings.from_env()


@functools.cache
def get_runtime() -> Runtime:
    """Return this process's runtime, built from the environment on first use."""
    settings = get_settings()
    options = _OPTIONS[0]
    engine = make_engine(
        settings, pool_size=options.pool_size, max_overflow=options.max_overflow,
        pre_ping=options.pre_ping, statement_timeout_s=options.statement_timeout_s,
        wait_for_connection=options.wait_for_connection,
    )
    return Runtime(settings=settings, engine=engine, sessions=make_session_factory(engine))


def configure_for_dispatcher(threads: int) -> None:
    """Size the runtime for a dispatcher on the threads pool (before first use): four
    connections per thread (a tick and its publisher, the history's maintenance and
    its lock), no statement timeout (the maintenance may run long statements)."""
    _OPTIONS[0] = EngineOptions(pool_size=2 * threads, max_overflow=2 * threads)
    if get_runtime.cache_info().currsize:
        get_runtime().engine.dispose()
        get_runtime.cache_clear()


def configure_for_worker() -> None:
    """Size the runtime for a worker process (before first use): a fixed pool of
    CRONBEAT_WORKER_DB_POOL connections, whatever its threads."""
    _OPTIONS[0] = EngineOptions(
        pool_size=get_settings().worker_db_pool, max_overflow=0, pre_ping=False,
        statement_timeout_s=WORKER_STATEMENT_TIMEOUT_S, wait_for_connection=True,
    )
    if get_runtime.cache_info().currsize:
        # Built already (nothing has connected yet at worker_init): build it again.
        get_runtime().engine.dispose()
        get_runtime.cache_clear()
