"""Engine and session factory. Creating them opens no connection; the first query does."""

from __future__ import annotations

from sqlalchemy import Engine, NullPool, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings

CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10


def make_engine(
    settings: Settings,
    *,
    pool_size: int = 5,
    pre_ping: bool = True,
    statement_timeout_s: int | None = None,
) -> Engine:
    """Return an engine for the settings' database.

    Every session works in READ COMMITTED (PostgreSQL's default), which the claim
    statements in :mod:`app.queries.claims` are written for.

    Args:
        pool_size: connections kept open; a process running N threads that each hold
            one for a transaction wants N.
        pre_ping: test each connection on checkout (a round trip). Workers turn it off
            and retry a unit of work on a dead connection instead.
        statement_timeout_s: PostgreSQL's statement_timeout and
            idle_in_transaction_session_timeout for these connections: no statement,
            and no transaction left open by a stuck thread, outlives it.
    """
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if statement_timeout_s is not None:
        limit_ms = statement_timeout_s * 1000
        connect_args["options"] = (
            f"-c statement_timeout={limit_ms} -c idle_in_transaction_session_timeout={limit_ms}"
        )
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=pre_ping,
        # A database that accepts TCP but never answers must fail a request or a probe,
        # not hang it: libpq gives up connecting after this, and a request waits at most
        # pool_timeout for a pooled connection.
        connect_args=connect_args,
        pool_timeout=POOL_TIMEOUT_S,
        # Statement parameters (payloads, headers, secrets) stay out of exception
        # messages, which end up in logs.
        hide_parameters=True,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory; callers open one ``with factory.begin()`` per unit of work."""
    return sessionmaker(engine, expire_on_commit=False)


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
