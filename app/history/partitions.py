"""The history's day partitions: their names, their bounds, and the DDL that adds and drops them.

``invocations`` and ``invocation_attempts`` are range-partitioned on ``scheduled_for``
(migration 0007): one partition per UTC day, ``<table>_pYYYYMMDD``, and ``<table>_default``
for a row of a day that has no partition of its own (older than the oldest day kept, or
a day whose partition could not be added because such a row arrived first).

Why a day: retention is counted in days, so the oldest day goes as one ``DROP TABLE``
instead of a ``DELETE`` of its rows; 30 days kept and 3 ahead make ~35 partitions a
table, few enough that planning and the LATERAL "last invocation" probe stay cheap, and
a day of a 10,000 runs/min installation (14.4 million rows) is a partition PostgreSQL
handles well. An attempt lives in its invocation's day, so both go together.

DDL takes no bound parameters: names and bounds come from ``datetime.date`` values and
fixed table names only, checked against :data:`PARTITION` before use. Adding a day
takes ``SHARE UPDATE EXCLUSIVE`` on the parents (``ATTACH PARTITION``), not the ``ACCESS
EXCLUSIVE`` that ``CREATE TABLE ... PARTITION OF`` would; dropping one takes a brief
``ACCESS EXCLUSIVE``. Callers own the transaction and set a lock timeout.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Connection, bindparam, exists, select, table, text
from sqlalchemy import column as sql_column

#: Parents in the order days are added (attempts reference invocations); dropped reversed.
TABLES = ("invocations", "invocation_attempts")
#: Days added ahead of today, so a tick never writes into the default partition.
AHEAD_DAYS = 3
PARTITION = re.compile(r"^(invocations|invocation_attempts)_p(\d{8})$")

UTC = dt.UTC
_DAY = dt.timedelta(days=1)
_CHILDREN = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = CAST(:parent AS regclass)"
).bindparams(bindparam("parent"))


# The BRIN indexes of one partition, each summarized where it is not yet. A BRIN range
# with no summary is read whole by every query through the index; VACUUM summarizes
# only full ranges, so a day's last, partly filled one stays unsummarized for good once
# the day is over. brin_summarize_new_values takes it too.
_SUMMARIZE_BRIN = text(
    "SELECT coalesce(sum(brin_summarize_new_values(x.indexrelid)), 0) FROM pg_index x"
    " JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam"
    " WHERE x.indrelid = to_regclass(:partition) AND a.amname = 'brin'"
).bindparams(bindparam("partition"))


def summarize_day(conn: Connection, day: dt.date) -> int:
    """Summarize the BRIN ranges of ``day``'s partitions that have no summary (its
    last, partly filled range once the day is over); returns how many. A day without
    partitions of its own has none."""
    return sum(int(conn.execute(_SUMMARIZE_BRIN, {
        "partition": partition_name(parent, day)}).scalar_one()) for parent in TABLES)


def partition_name(parent: str, day: dt.date) -> str:
    name = f"{parent}_p{day:%Y%m%d}"
    if parent not in TABLES or not PARTITION.match(name):
        raise ValueError(f"not a history partition: {name}")
    return name


def default_name(parent: str) -> str:
    if parent not in TABLES:
        raise ValueError(f"not a history table: {parent}")
    return f"{parent}_default"


def day_start(day: dt.date) -> dt.datetime:
    """The first instant of ``day`` in UTC (a partition's lower bound)."""
    return dt.datetime.combine(day, dt.time(), UTC)


def utc_day(instant: dt.datetime) -> dt.date:
    return instant.astimezone(UTC).date()


def existing_days(conn: Connection) -> list[dt.date]:
    """The days that have a partition of ``invocations``, oldest first."""
    days = []
    for name in conn.execute(_CHILDREN, {"parent": "invocations"}).scalars():
        match = PARTITION.match(name)
        if match:
            days.append(dt.datetime.strptime(match.group(2), "%Y%m%d").date())
    return sorted(days)


def _default_holds(conn: Connection, day: dt.date) -> bool:
    default = table(default_name("invocations"), sql_column("scheduled_for"))
    start = day_start(day)
    return bool(conn.execute(select(exists().where(
        default.c.scheduled_for >= start, default.c.scheduled_for < start + _DAY,
    ))).scalar())


def add_day(conn: Connection, day: dt.date) -> bool:
    """Add ``day``'s partition to both tables; False if the default partition holds rows of it.

    Such rows (written while no partition covered the day) keep the day in the default
    partition, where retention deletes them once the day expires.
    """
    if _default_holds(conn, day):
        return False
    lower, upper = day_start(day).isoformat(), day_start(day + _DAY).isoformat()
    for parent in TABLES:
        name = partition_name(parent, day)
        conn.execute(text(f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS"
                          " INCLUDING CONSTRAINTS)"))
        conn.execute(text(f"ALTER TABLE {parent} ATTACH PARTITION {name}"
                          f" FOR VALUES FROM ('{lower}') TO ('{upper}')"))
    return True


def drop_day(conn: Connection, day: dt.date) -> None:
    """Drop ``day``'s partitions of both tables (attempts first: they reference invocations).

    A referenced partition cannot be dropped while attached, so the invocations' one is
    detached first (which checks that no attempt row still points into it).
    """
    attempts, invocations = (partition_name(parent, day) for parent in TABLES[::-1])
    conn.execute(text(f"DROP TABLE {attempts}"))
    conn.execute(text(f"ALTER TABLE invocations DETACH PARTITION {invocations}"))
    conn.execute(text(f"DROP TABLE {invocations}"))
