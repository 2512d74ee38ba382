"""/metrics' counters: finished runs, attempts, alerts and scheduled runs' start lateness.

Prometheus counters must never go down, and the history they count leaves the
database (retention drops whole days of invocations and attempts, and deletes old
alerts). So a counter's value is the sum of three parts, read in one snapshot:

* ``counter_totals``: what retention removed, added in the very transaction that
  drops a day (:func:`fold_day`) or deletes alerts (:func:`retire_alerts`);
* ``counter_days``: the hours already *closed*, by UTC day, still in the history;
* the live count of the history at or after ``history_state.counted_before`` (one or
  two hours in steady state, read through BRIN indexes on ``scheduled_for`` and the
  alerts' ``created_at`` index).

The maintenance closes hours (:func:`close`) once they ended SETTLE ago and hold no
pending or running invocation and no pending alert: from then on nothing in them
changes, so moving their counts from the live part into ``counter_days`` keeps every
counter where it was. Deleting a trigger removes no history, so it changes nothing.

What is counted (in-flight things are not: the ``cronbeat_invocations_in_flight``
gauge shows them):

* invocations by finished status (succeeded, failed, cancelled, skipped, missed);
* attempts with an outcome; an attempt the sweep marked ``abandoned`` stays counted
  so even when its worker reports later (``attempt_sql.TAKEN_BACK_NOTE``), because
  that report rewrites its outcome and a counter cannot move a count between labels;
* the start lateness of scheduled runs (``manual`` false: run now, replays and
  backfills are all manual runs): the first attempt's start minus the occurrence's
  time, once that attempt finished (an unfinished first attempt may still be undone by
  the sweep), clamped at 0, its sum kept in whole milliseconds so the parts add up
  exactly;
* alerts by final status (delivered, failed), by day of ``created_at``.

Rows added to a closed hour later (a backfill, missed occurrences recorded after an
outage) are counted when their day is dropped, never twice: :func:`fold_day` counts
the day again and keeps the larger of that and what was stored.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    and_,
    case,
    cast,
    delete,
    func,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import insert

from app.enums import InvocationStatus
from app.history import partitions
from app.models import (
    Alert,
    CounterDay,
    CounterTotal,
    HistoryState,
    Invocation,
    InvocationAttempt,
)
from app.queries.attempt_sql import TAKEN_BACK_NOTE


class Family(enum.StrEnum):
    """What a stored count is of (``counter_totals.family``, ``counter_days.family``)."""

    #: Invocations, by finished status.
    INVOCATIONS = "invocations"
    #: Attempts, by outcome.
    ATTEMPTS = "attempts"
    #: Scheduled runs' start lateness: a cumulative count per bucket, "+Inf", "sum_ms".
    LATENESS = "lateness"
    #: Alerts, by final status.
    ALERTS = "alerts"


_IN_FLIGHT = (InvocationStatus.PENDING, InvocationStatus.RUNNING)
_FINISHED = tuple(s for s in InvocationStatus if s not in _IN_FLIGHT)
FINISHED = tuple(s.value for s in _FINISHED)
OUTCOMES = ("succeeded", "failed", "error", "abandoned")
ALERT_STATUSES = ("delivered", "failed")
#: The lateness histogram's upper bounds, seconds: a tick's precision (under 1 s) up to
#: an hour of outage.
LATENESS_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
INF = "+Inf"
SUM_MS = "sum_ms"
#: An hour is closed this long after it ended (as a day's rollup waits after the day).
SETTLE = dt.timedelta(hours=1)
#: The most one :func:`close` step counts: a day of history.
CLOSE_SPAN = dt.timedelta(days=1)

_HISTORY = (Family.INVOCATIONS, Family.ATTEMPTS, Family.LATENESS)
_inv = Invocation.__table__
_att = InvocationAttempt.__table__
_alerts = Alert.__table__
_HOUR = dt.timedelta(hours=1)
_DAY = dt.timedelta(days=1)

#: Counts by (day, family, label).
DayCounts = collections.Counter[tuple[dt.date, str, str]]
#: Counts by (family, label).
Counts = collections.Counter[tuple[str, str]]


def bucket_label(upper_s: float) -> str:
    return f"{upper_s:g}"


def _day(column: Any) -> Any:
    return cast(func.timezone("UTC", column), Date)


def _window(column: Any, lo: dt.datetime | None, hi: dt.datetime | None) -> list[Any]:
    return [c for c in ((column >= lo) if lo else None, (column < hi) if hi else None)
            if c is not None]


def history_counts(conn: Connection, lo: dt.datetime | None,
                   hi: dt.datetime | None) -> DayCounts:
    """The invocations, attempts and lateness of history scheduled in ``[lo, hi)``."""
    counts: DayCounts = collections.Counter()
    inv_day = _day(_inv.c.scheduled_for)
    for day, status, n in conn.execute(
        select(inv_day, _inv.c.status, func.count())
        .where(*_window(_inv.c.scheduled_for, lo, hi), _inv.c.status.in_(_FINISHED))
        .group_by(inv_day, _inv.c.status)
    ):
        counts[day, Family.INVOCATIONS, InvocationStatus(status).value] += n
    att_day = _day(_att.c.scheduled_for)
    outcome = case((_att.c.error.like(f"%{TAKEN_BACK_NOTE}"), "abandoned"),
                   else_=_att.c.outcome)
    for day, label, n in conn.execute(
        select(att_day, outcome, func.count())
        .where(*_window(_att.c.scheduled_for, lo, hi), _att.c.outcome.is_not(None))
        .group_by(att_day, outcome)
    ):
        counts[day, Family.ATTEMPTS, label] += n
    late = func.greatest(func.extract("epoch", _att.c.started_at - _inv.c.scheduled_for), 0)
    labels = [*(bucket_label(b) for b in LATENESS_BUCKETS_S), INF, SUM_MS]
    for day, *values in conn.execute(
        select(att_day, *(func.count().filter(late <= b) for b in LATENESS_BUCKETS_S),
               func.count(), func.coalesce(func.sum(func.floor(late * 1000)), 0))
        .select_from(_att.join(_inv, and_(_inv.c.id == _att.c.invocation_id,
                                          _inv.c.scheduled_for == _att.c.scheduled_for)))
        .where(*_window(_att.c.scheduled_for, lo, hi), _att.c.number == 1,
               _att.c.outcome.is_not(None), _inv.c.manual.is_(False))
        .group_by(att_day)
    ):
        for label, value in zip(labels, values, strict=True):
            counts[day, Family.LATENESS, label] += int(value)
    return counts


def alert_counts(conn: Connection, lo: dt.datetime | None, hi: dt.datetime | None) -> DayCounts:
    """The finished alerts created in ``[lo, hi)``."""
    day = _day(_alerts.c.created_at)
    return collections.Counter({
        (d, Family.ALERTS, status): n for d, status, n in conn.execute(
            select(day, _alerts.c.status, func.count())
            .where(*_window(_alerts.c.created_at, lo, hi), _alerts.c.status != "pending")
            .group_by(day, _alerts.c.status))
    })


def _by_series(counts: DayCounts) -> Counts:
    result: Counts = collections.Counter()
    for (_, family, label), n in counts.items():
        result[family, label] += n
    return result


def _add(conn: Connection, model: type[CounterDay] | type[CounterTotal],
         rows: Iterable[Mapping[str, Any]]) -> None:
    """Add each row's value to its series' stored one."""
    values = [dict(row) for row in rows if row["value"]]
    if not values:
        return
    table = model.__table__
    statement = insert(table).values(values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={"value": table.c.value + statement.excluded.value}))


def counted_before(conn: Connection) -> dt.datetime | None:
    return conn.execute(select(HistoryState.counted_before)).scalar()


def _hour(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def close(conn: Connection, *, now: dt.datetime) -> dt.datetime | None:
    """Close the next hours (at most CLOSE_SPAN of them): count them into counter_days.

    Returns:
        The new ``counted_before``, or None when no hour can be closed yet.
    """
    before = counted_before(conn)
    start = before or _oldest_hour(conn) or _hour(now - SETTLE)
    end = min(_hour(now - SETTLE), start + CLOSE_SPAN)
    open_run = conn.execute(select(func.min(Invocation.scheduled_for)).where(
        Invocation.status.in_(_IN_FLIGHT), Invocation.scheduled_for >= start)).scalar()
    open_alert = conn.execute(select(func.min(Alert.created_at)).where(
        Alert.status == "pending", Alert.created_at >= start)).scalar()
    for instant in (open_run, open_alert):
        if instant is not None:
            end = min(end, _hour(instant))
    if end <= start:
        if before is None:
            _move_to(conn, start)
            return start
        return None
    counts = history_counts(conn, start, end) + alert_counts(conn, start, end)
    _add(conn, CounterDay, ({"day": day, "family": family, "label": label, "value": n}
                            for (day, family, label), n in counts.items()))
    _move_to(conn, end)
    return end


def _oldest_hour(conn: Connection) -> dt.datetime | None:
    """The hour of the oldest history or alert: where the first close starts.

    Read cheaply: the oldest day partition, the default partition (a few rows), the
    alerts' ``created_at`` index.
    """
    days = partitions.existing_days(conn)
    default = table(partitions.default_name("invocations"), sql_column("scheduled_for"))
    found = [partitions.day_start(days[0])] if days else []
    found += [instant for instant in conn.execute(select(
        select(func.min(default.c.scheduled_for)).scalar_subquery(),
        select(func.min(Alert.created_at)).scalar_subquery(),
    )).one() if instant is not None]
    return _hour(min(found)) if found else None


def _move_to(conn: Connection, instant: dt.datetime) -> None:
    conn.execute(update(HistoryState).where(HistoryState.id == 1)
                 .values(counted_before=instant))


def fold_day(conn: Connection, day: dt.date) -> None:
    """Move ``day``'s history counts into counter_totals (before its rows are removed).

    Its closed hours count the larger of what is stored and what is there now (rows
    added to them after they closed are counted here); its live hours as they are.
    """
    start, end = partitions.day_start(day), partitions.day_start(day + _DAY)
    split = min(max(counted_before(conn) or start, start), end)
    empty: Counts = collections.Counter()
    closed = _by_series(history_counts(conn, start, split)) if split > start else empty
    live = _by_series(history_counts(conn, split, end)) if split < end else empty
    stored_rows = conn.execute(select(CounterDay.family, CounterDay.label, CounterDay.value)
                               .where(CounterDay.day == day, CounterDay.family.in_(_HISTORY)))
    stored = {(family, label): value for family, label, value in stored_rows}
    keys = set(closed) | set(live) | set(stored)
    _add(conn, CounterTotal, (
        {"family": family, "label": label,
         "value": max(closed.get((family, label), 0), stored.get((family, label), 0))
         + live.get((family, label), 0)}
        for family, label in sorted(keys)))
    conn.execute(delete(CounterDay).where(CounterDay.day == day,
                                          CounterDay.family.in_(_HISTORY)))


def retire_alerts(conn: Connection, removed: Iterable[tuple[dt.datetime, str]]) -> None:
    """Move the counts of deleted alerts (``(created_at, status)``) into counter_totals.

    In the transaction that deletes them. A deleted alert of a closed hour leaves its
    day's stored count; one of the live hours leaves the live count.
    """
    before = counted_before(conn)
    totals: Counts = collections.Counter()
    closed: DayCounts = collections.Counter()
    for created_at, status in removed:
        totals[Family.ALERTS, status] += 1
        if before is not None and created_at < before:
            closed[partitions.utc_day(created_at), Family.ALERTS, status] += 1
    _add(conn, CounterTotal, ({"family": f, "label": label, "value": n}
                              for (f, label), n in totals.items()))
    for (day, family, label), n in closed.items():
        conn.execute(update(CounterDay).where(
            CounterDay.day == day, CounterDay.family == family, CounterDay.label == label,
        ).values(value=func.greatest(CounterDay.value - n, 0)))
    # A day whose alerts are all gone keeps no row.
    conn.execute(delete(CounterDay).where(CounterDay.family == Family.ALERTS,
                                          CounterDay.value == 0))


def read(conn: Connection) -> Counts:
    """Every counter's value: stored parts plus the live count, by (family, label).

    Read in one snapshot that no drop can cut (:func:`app.queries.locks.hold_history`),
    or a counter could briefly count a moved part twice or not at all.
    """
    series = union_all(
        select(CounterTotal.family, CounterTotal.label, CounterTotal.value),
        select(CounterDay.family, CounterDay.label, CounterDay.value),
    ).subquery()
    counts: Counts = collections.Counter({
        (family, label): int(value) for family, label, value in conn.execute(
            select(series.c.family, series.c.label, func.sum(series.c.value))
            .group_by(series.c.family, series.c.label))
    })
    before = counted_before(conn)
    live = history_counts(conn, before, None) + alert_counts(conn, before, None)
    counts.update(_by_series(live))
    return counts


def in_flight(conn: Connection) -> dict[str, int]:
    """Invocations pending and running now, each count served by a partial index."""
    def count(*conditions: Any) -> Any:
        return select(func.count()).where(*conditions).scalar_subquery()
    pending = InvocationStatus.PENDING.value
    row = conn.execute(select(
        count(_inv.c.status == pending, _inv.c.parked_at.is_(None)),
        count(_inv.c.status == pending, _inv.c.parked_at.is_not(None)),
        count(_inv.c.status == InvocationStatus.RUNNING.value),
    )).one()
    return {"pending": row[0] + row[1], "running": row[2]}
