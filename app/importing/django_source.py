"""Reading django-celery-beat's tables from another PostgreSQL database, read-only.

The source is another application's database, so the import only reads it: one
connection, one READ ONLY transaction (PostgreSQL refuses any write in it) at REPEATABLE
READ (every table from one snapshot), the tables reflected as they are (an older
django-celery-beat schema, without clocked schedules or ``expire_seconds``, reads too),
SQLAlchemy Core selects, and the connection closed. What goes wrong is a
:class:`ConfigError` of one line that shows the URL without its password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, MetaData, NullPool, Table, create_engine, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.config import normalize_database_url
from app.db import CONNECT_TIMEOUT_S, application_name
from app.errors import ConfigError

_PREFIX = "django_celery_beat_"
TASKS = f"{_PREFIX}periodictask"
#: Each schedule kind, by the periodic task's column that points to it: its table.
SCHEDULES = {"crontab": f"{_PREFIX}crontabschedule",
             "interval": f"{_PREFIX}intervalschedule",
             "clocked": f"{_PREFIX}clockedschedule",
             "solar": f"{_PREFIX}solarschedule"}


def source_url(url: str, option: str) -> URL:
    """``url`` as SQLAlchemy's URL, with the psycopg2 driver.

    Raises:
        ConfigError: it is not a PostgreSQL URL (the message names ``option``).
    """
    try:
        return make_url(normalize_database_url(url.strip(), option))
    except ArgumentError:
        raise ConfigError(f"{option} is not a database URL") from None


def shown(url: URL) -> str:
    """The URL to show: ``postgresql://``, its password (if any) as ``***``."""
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


@contextlib.contextmanager
def read_only(url: URL) -> Iterator[Connection]:
    """A connection to ``url`` in a READ ONLY, REPEATABLE READ transaction, rolled back
    and closed afterwards.

    Raises:
        ConfigError: the server cannot be reached or refuses the connection, or a
            statement fails; the message shows the URL without its password.
    """
    engine = create_engine(
        url, poolclass=NullPool, hide_parameters=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                      "application_name": f"{application_name()} import"})
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with connection.begin() as transaction:
                yield connection
                transaction.rollback()  # it wrote nothing: nothing to commit
    except DBAPIError as exc:
        # libpq's first line says what failed (refused, no such database, ...); the
        # password is blanked should a message ever quote it.
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise ConfigError(f"cannot read {shown(url)}: {reason}") from None
    finally:
        engine.dispose()


def _rows_by_id(connection: Connection, table: Table) -> dict[Any, dict[str, Any]]:
    return {row["id"]: dict(row)
            for row in connection.execute(select(table)).mappings()}


def read_periodic_tasks(connection: Connection, url: URL) -> list[dict[str, Any]]:
    """Every periodic task, by name, as :mod:`app.importing.django_celery_beat` takes
    them: the task's columns (as this schema has them), and under ``crontab``,
    ``interval``, ``clocked`` and ``solar`` the row of its schedule, or None.

    Raises:
        ConfigError: the database has no ``django_celery_beat_periodictask`` table.
    """
    metadata = MetaData()
    metadata.reflect(connection, only=lambda name, _: name.startswith(_PREFIX))
    tasks = metadata.tables.get(TASKS)
    if tasks is None:
        raise ConfigError(f"{shown(url)} has no django-celery-beat tables ({TASKS}): give"
                          " the database of the Django project that runs beat")
    schedules = {kind: _rows_by_id(connection, metadata.tables[table])
                 for kind, table in SCHEDULES.items()
                 if table in metadata.tables and f"{kind}_id" in tasks.c}
    result: list[dict[str, Any]] = []
    for row in connection.execute(select(tasks).order_by(tasks.c.name)).mappings():
        task = dict(row)
        for kind in SCHEDULES:
            schedule_id = task.pop(f"{kind}_id", None)
            task[kind] = (schedules[kind].get(schedule_id)
                          if kind in schedules and schedule_id is not None else None)
        result.append(task)
    return result
