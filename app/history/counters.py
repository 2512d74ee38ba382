"""/metrics' counters: finished runs, attempts, alerts and scheduled runs' start lateness.

Prometheus counters must never go down, and the history they count leaves the
database (retention drops whole days of invocations and attempts, and deletes old
alerts). So a counter's value is two parts, read in one snapshot:

* ``counter_totals``: everything counted for good, permanent;
* the live count of the rows that *entered* the history at or after
  ``history_state.counted_before``: invocations by ``created_at``, attempts (and the
  lateness their start shows) by ``started_at``, alerts by ``created_at``. An hour or
  two of rows in steady state, read through BRIN indexes on those columns.

Each row is counted by when it entered the history, never by the time it is about
(``scheduled_for``): a missed occurrence recorded after an outage, or a backfill, is
in the live count from the scrape after its commit, however old its occurrence.

The maintenance closes an hour (:func:`close`) once it ended SETTLE ago and everything
that entered in it is final: no pending or running invocation created in it, no
attempt started in it without an outcome, no pending alert created in it. Its counts
are added to ``counter_totals`` and ``counted_before`` moves past it in one
transaction, so every counter stays where it was. From then on retention removing
those rows changes nothing. The one exception is a removed row not counted yet (it
entered at or after ``counted_before``: missed rows recorded for an occurrence older
than the retention, a live hour's alert pruned): the transaction that removes it adds
it to ``counter_totals`` (:func:`fold_day`, :func:`retire_alerts`). Deleting a trigger
removes no history, so it changes nothing.

``created_at`` and ``started_at`` are their transaction's start (``now()``): a row is
counted as long as its transaction commits within SETTLE of its start, which every
Cronbeat transaction does by far.

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
* alerts by final status (delivered, failed).
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, case, func, select, update
from sqlalchemy.dialects.postgresql import insert

from app.enums import InvocationStatus
from app.history import partitions
from app.models import Alert, CounterTotal, HistoryState, Invocation, InvocationAttempt
from app.queries.attempt_sql import TAKEN_BACK_NOTE


class Family(enum.StrEnum):
    """What a stored count is of (``counter_totals.family``)."""

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
#: An hour is closed this long after it ended: a row's created_at / started_at is its
#: transaction's start, so a transaction still open at the hour's end has this long to
#: commit before the hour's count is taken.
SETTLE = dt.timedelta(hours=1)
#: The most one :func:`close` step counts after the first: a day of history.
CLOSE_SPAN = dt.timedelta(days=1)

_inv = Invocation.__table__
_att = InvocationAttempt.__table__
_alerts = Alert.__table__

#: Counts by (family, label).
Counts = collections.Counter[tuple[str, str]]


def bucket_label(upper_s: float) -> str:
    return f"{upper_s:g}"


def _window(column: Any, lo: dt.datetime | None, hi: dt.datetime | None) -> list[Any]:
    return [c for c in ((column >= lo) if lo else None, (column < hi) if hi else None)
            if c is not None]


def _of_day(column: Any, day: dt.date | None) -> list[Any]:
    """Rows of one day's partition (the partition key ``scheduled_for``), or all."""
    if day is None:
        return []
    return _window(column, partitions.day_start(day), partitions.day_start(day)
                   + dt.timedelta(days=1))


def _finished_attempts(att: Any, lo: dt.datetime | None, hi: dt.datetime | None,
                       day: dt.date | None) -> list[Any]:
    return [*_window(att.c.started_at, lo, hi), *_of_day(att.c.scheduled_for, day),
            att.c.outcome.is_not(None)]


def history_counts(conn: Connection, lo: dt.datetime | None, hi: dt.datetime | None = None,
                   *, day: dt.date | None = None) -> Counts:
    """The invocations created, and the attempts (and their lateness) started, in
    ``[lo, hi)`` (None: unbounded); of ``day``'s partition only when given."""
    counts: Counts = collections.Counter()
    for status, n in conn.execute(
        select(_inv.c.status, func.count())
        .where(*_window(_inv.c.created_at, lo, hi), *_of_day(_inv.c.scheduled_for, day),
               _inv.c.status.in_(_FINISHED))
        .group_by(_inv.c.status)
    ):
        counts[Family.INVOCATIONS, InvocationStatus(status).value] += n
    outcome = case((_att.c.error.like(f"%{TAKEN_BACK_NOTE}"), "abandoned"),
                   else_=_att.c.outcome)
    for label, n in conn.execute(
        select(outcome, func.count()).where(*_finished_attempts(_att, lo, hi, day))
        .group_by(outcome)
    ):
        counts[Family.ATTEMPTS, label] += n
    for label, value in zip(_LATENESS_LABELS, conn.execute(_lateness(lo, hi, day)).one(),
                            strict=True):
        counts[Family.LATENESS, label] += int(value)
    return counts


_LATENESS_LABELS = (*(bucket_label(b) for b in LATENESS_BUCKETS_S), INF, SUM_MS)


def _lateness(lo: dt.datetime | None, hi: dt.datetime | None, day: dt.date | None) -> Any:
    """The lateness histogram of the first attempts started in ``[lo, hi)`` of scheduled
    runs: a count per bucket, the count, the sum in milliseconds.

    ``manual`` is the invocation's, so the attempts are joined to their invocations. The
    planner hashes the invocations' side whole, every partition; the bound on their
    ``scheduled_for`` (the oldest of those attempts', an InitPlan) lets the executor skip
    every partition before it, so a scrape reads today's (and, after a backfill, its
    days') instead of the whole retention.
    """
    first = [_att.c.number == 1, *_finished_attempts(_att, lo, hi, day)]
    other = _att.alias("first_attempts")
    oldest = (select(func.min(other.c.scheduled_for))
              .where(other.c.number == 1, *_finished_attempts(other, lo, hi, day))
              .scalar_subquery())
    late = func.greatest(func.extract("epoch", _att.c.started_at - _att.c.scheduled_for), 0)
    return (
        select(*(func.count().filter(late <= b) for b in LATENESS_BUCKETS_S),
               func.count(), func.coalesce(func.sum(func.floor(late * 1000)), 0))
        .select_from(_att.join(_inv, and_(_inv.c.id == _att.c.invocation_id,
                                          _inv.c.scheduled_for == _att.c.scheduled_for)))
        .where(*first, *_of_day(_inv.c.scheduled_for, day), _inv.c.manual.is_(False),
               _inv.c.scheduled_for >= oldest)
    )


def alert_counts(conn: Connection, lo: dt.datetime | None,
                 hi: dt.datetime | None = None) -> Counts:
    """The finished alerts created in ``[lo, hi)`` (None: unbounded)."""
    return collections.Counter({
        (Family.ALERTS, status): n for status, n in conn.execute(
            select(_alerts.c.status, func.count())
            .where(*_window(_alerts.c.created_at, lo, hi), _alerts.c.status != "pending")
            .group_by(_alerts.c.status))
    })


def _add_to_totals(conn: Connection, counts: Counts) -> None:
    """Add ``counts`` to counter_totals (a series seen the first time starts at 0)."""
    values = [{"family": family, "label": label, "value": n}
              for (family, label), n in sorted(counts.items()) if n]
    if not values:
        return
    statement = insert(CounterTotal).values(values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[CounterTotal.family, CounterTotal.label],
        set_={"value": CounterTotal.value + statement.excluded.value}))


def counted_before(conn: Connection) -> dt.datetime | None:
    return conn.execute(select(HistoryState.counted_before)).scalar()


def _hour(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def close(conn: Connection, *, now: dt.datetime) -> dt.datetime | None:
    """Close the next settled hours (after the first close, at most CLOSE_SPAN of them):
    add their counts to counter_totals and move ``counted_before`` to their end.

    The first close (``counted_before`` NULL, as migration 0019 leaves it) counts all the
    history held before its end, once.

    Returns:
        The new ``counted_before``, or None when no hour can be closed yet.
    """
    before = counted_before(conn)
    end = _hour(now - SETTLE)
    if before is not None:
        end = min(end, before + CLOSE_SPAN)
    for instant in _oldest_open(conn, before):
        if instant is not None:
            end = min(end, _hour(instant))
    if before is not None and end <= before:
        return None
    _add_to_totals(conn, history_counts(conn, before, end) + alert_counts(conn, before, end))
    conn.execute(update(HistoryState).where(HistoryState.id == 1).values(counted_before=end))
    return end


def _oldest_open(conn: Connection, since: dt.datetime | None) -> tuple[Any, ...]:
    """When the oldest thing not final entered the history at or after ``since``: an
    invocation pending or running, an attempt without an outcome, a pending alert."""
    def oldest(column: Any, *conditions: Any) -> Any:
        return select(func.min(column)).where(
            *_window(column, since, None), *conditions).scalar_subquery()
    return tuple(conn.execute(select(
        oldest(_inv.c.created_at, _inv.c.status.in_(_IN_FLIGHT)),
        oldest(_att.c.started_at, _att.c.outcome.is_(None)),
        oldest(_alerts.c.created_at, _alerts.c.status == "pending"),
    )).one())


def fold_day(conn: Connection, day: dt.date) -> None:
    """Add the rows of ``day``'s partition not counted yet (they entered the history at
    or after ``counted_before``) to counter_totals; in the transaction that removes them.
    """
    _add_to_totals(conn, history_counts(conn, counted_before(conn), day=day))


def retire_alerts(conn: Connection, removed: Iterable[tuple[dt.datetime, str]]) -> None:
    """Add the deleted alerts (``(created_at, status)``) not counted yet to
    counter_totals; in the transaction that deletes them."""
    before = counted_before(conn)
    _add_to_totals(conn, collections.Counter(
        (Family.ALERTS, status) for created_at, status in removed
        if before is None or created_at >= before))


def read(conn: Connection) -> Counts:
    """Every counter's value, counter_totals plus the live count, by (family, label).

    Read in one snapshot that no drop can cut (:func:`app.queries.locks.hold_history`),
    or a counter could briefly count a removed row twice or not at all.
    """
    counts: Counts = collections.Counter({
        (family, label): int(value) for family, label, value in conn.execute(
            select(CounterTotal.family, CounterTotal.label, CounterTotal.value))
    })
    before = counted_before(conn)
    counts.update(history_counts(conn, before) + alert_counts(conn, before))
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
