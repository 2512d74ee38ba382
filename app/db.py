"""Engine and session factory. Creating them opens no connection; the first query does."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, NullPool, QueuePool, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10
#: A thread that found every pooled connection in use logs this often while it waits,
#: and gives up after POOL_MAX_WAIT_S (a pool that stays dry that long is a stuck one).
POOL_WAIT_LOG_EVERY_S = 5.0
POOL_MAX_WAIT_S = 600.0


def application_name() -> str:
    """What this process's connections are called in ``pg_stat_activity``."""
    return f"cronbeat[{os.getpid()}]"


class WaitingPool(QueuePool):
    """A QueuePool whose checkout, when every connection is in use, waits (logging why)
    up to :data:`POOL_MAX_WAIT_S` instead of failing the unit of work after
    ``pool_timeout``.

    A worker's pool is a small, fixed budget shared by many threads (app.config's
    CRONBEAT_WORKER_DB_POOL): a thread that finds it dry queues for the next free
    connection, which comes back within one short transaction.
    """

    def connect(self) -> Any:
        started = time.monotonic()
        while True:
            try:
                return super().connect()
            except PoolTimeout:
                waited_s = time.monotonic() - started
                if waited_s >= POOL_MAX_WAIT_S:
                    raise
                log.warning(
                    "database: all %d connections of this process's pool are in use; a"
                    " unit of work has waited %.0f s for one (raise CRONBEAT_WORKER_DB_POOL"
                    " if this persists)", self.size(), waited_s,
                    extra={"action": "db.pool_exhausted", "pool_size": self.size(),
                           "checked_out": self.checkedout()})


def make_engine(
    settings: Settings,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    pre_ping: bool = True,
    statement_timeout_s: int | None = None,
    wait_for_connection: bool = False,
) -> Engine:
    """Return an engine for the settings' database.

    Every session works in READ COMMITTED (PostgreSQL's default), which the claim
    statements in :mod:`app.queries.claims` are written for.

    Args:
        pool_size: connections kept open; a process running N threads that each hold
            one for a transaction wants N.
        pre_ping: test each connection on checkout (a round trip). Workers turn it off
            and retry a unit of work on a dead connection instead.
        max_overflow: connections opened beyond ``pool_size`` under load (0: a fixed
            budget).
        statement_timeout_s: PostgreSQL's statement_timeout and
            idle_in_transaction_session_timeout for these connections: no statement,
            and no transaction left open by a stuck thread, outlives it.
        wait_for_connection: a thread that finds every connection in use waits for
            one, logging every POOL_WAIT_LOG_EVERY_S (:class:`WaitingPool`), instead of
            failing after POOL_TIMEOUT_S.
    """
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S,
                                       "application_name": application_name()}
    if statement_timeout_s is not None:
        limit_ms = statement_timeout_s * 1000
        connect_args["options"] = (
            f"-c statement_timeout={limit_ms} -c idle_in_transaction_session_timeout={limit_ms}"
        )
    pool_options: dict[str, Any] = {"pool_timeout": POOL_TIMEOUT_S}
    if wait_for_connection:
        pool_options = {"poolclass": WaitingPool, "pool_timeout": POOL_WAIT_LOG_EVERY_S}
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        # A database that accepts TCP but never answers must fail a request or a probe,
        # not hang it: libpq gives up connecting after this, and a request waits at most
        # pool_timeout for a pooled connection.
        connect_args=connect_args,
        **pool_options,
        # Statement parameters (payloads, headers, secrets) stay out of exception
        # messages, which end up in logs.
        hide_parameters=True,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory; callers open one ``with factory.begin()`` per unit of work."""
    return sessionmaker(engine, expire_on_commit=False)


def in_transaction(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction; on a connection found dead, once more.

    Workers do not ping a pooled connection before each use (a round trip per unit of
    work): a connection PostgreSQL closed since (a restart, a failover, an idle timeout)
    fails its first statement, SQLAlchemy drops the pool's connections of that age, and
    the work is tried again on a fresh one. Nothing was written by the failed try: the
    connection died before its commit.

    Raises:
        sqlalchemy errors: any other failure, or the second try's.
    """
    for last in (False, True):
        try:
            with sessions.begin() as session:
                return work(session)
        except DBAPIError as exc:
            if last or not exc.connection_invalidated:
                raise
            log.info("database: the connection was gone, trying again on a fresh one",
                     extra={"action": "db.reconnect"})
    raise AssertionError("unreachable: the last try returns or raises")


def _quoted(engine: Engine, name: str) -> str:
    # Identifiers cannot be bound parameters; the dialect's preparer quotes them safely.
    return engine.dialect.identifier_preparer.quote(name)


def create_database(admin_url: str, name: str, *, template: str | None = None) -> None:
    """Create database ``name`` (from ``template`` if given) unless it exists."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if found is None:
                statement = f"CREATE DATABASE {_quoted(engine, name)}"
                if template is not None:
                    statement += f" TEMPLATE {_quoted(engine, template)}"
                conn.execute(text(statement))
    finally:
        engine.dispose()


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing its other connections first."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quoted(engine, name)} WITH (FORCE)"))
    finally:
        engine.dispose()
