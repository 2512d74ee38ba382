"""The history's maintenance: add days ahead, roll up settled days, drop expired ones.

Run by beat's schedule (``tasks.maintenance``, every messaging.config.HISTORY_INTERVAL_S), and safe
to run anywhere at any time: one run at a time holds the history's advisory lock
(:func:`app.queries.locks.try_lock_history`) and the others return at once. Each step
is its own short transaction with a lock timeout, so DDL never queues the run path
behind a long reader for more than LOCK_TIMEOUT_MS; what timed out is done next run.

The rules (``now`` is an argument; every day is a UTC day of ``scheduled_for``):

* days from yesterday to AHEAD_DAYS ahead have partitions;
* a day is expired once it is older than ``today - retention_days``; an expired day is
  dropped only when none of its invocations is ``pending`` or ``running`` (a long
  retry keeps its whole day, and the day goes at the first run after it finished).
  Its rollups are written, final, in the transaction that drops it;
* a kept day is rolled up once, SETTLE after it ended (``history_state.rolled_up_through``);
  a run that finishes later than that is counted by the final rollup at drop time;
* rows of expired days in the default partition (days that had no partition) are
  rolled up and deleted by the same rule, a day at a time;
* finished alerts older than the retention are deleted, with the alert rules and
  states of deleted triggers (app.alerting.retention);
* /metrics' counters close the hours that have settled (app.history.counters), a day
  of hours a step; an expired day's rows no closed hour counted yet (recorded late for
  an old occurrence) are added to ``counter_totals`` in the transaction that drops
  them, so no counter goes down.

Each run does at most MAX_DAYS_PER_RUN drops and as many rollups, so an installation
upgraded with a year of history catches up over a few runs instead of in one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import (
    Connection,
    Date,
    Engine,
    cast,
    delete,
    exists,
    func,
    select,
    table,
    text,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.exc import OperationalError

from app.alerting import retention as alerts
from app.enums import InvocationStatus
from app.history import counters, partitions
from app.history.stats import roll_up_day
from app.models import HistoryState, Invocation
from app.queries.locks import try_lock_history, unlock_history

SETTLE = dt.timedelta(hours=1)
MAX_DAYS_PER_RUN = 31
LOCK_TIMEOUT_MS = 2000
LOCK_NOT_AVAILABLE = "55P03"

_DAY = dt.timedelta(days=1)
T = TypeVar("T")
_UNFINISHED = (InvocationStatus.PENDING, InvocationStatus.RUNNING)


@dataclasses.dataclass
class MaintenanceReport:
    """What one run did (``skipped``: another run held the lock)."""

    skipped: bool = False
    added: list[dt.date] = dataclasses.field(default_factory=list)
    dropped: list[dt.date] = dataclasses.field(default_factory=list)
    #: Expired days kept because some of their invocations are pending or running.
    kept_back: list[dt.date] = dataclasses.field(default_factory=list)
    rolled_up: list[dt.date] = dataclasses.field(default_factory=list)
    rows_dropped: int = 0
    #: Steps given up on a lock timeout; done next run.
    lock_timeouts: int = 0
    #: Alerts older than the retention deleted (app.alerting.retention).
    alerts_deleted: int = 0


def maintain(engine: Engine, *, now: dt.datetime, retention_days: int) -> MaintenanceReport:
    """One maintenance run (see the module's rules)."""
    report = MaintenanceReport()
    with engine.connect() as conn:
        if not try_lock_history(conn):
            conn.commit()
            report.skipped = True
            return report
        conn.commit()
        try:
            _run(conn, report, now=now, retention_days=retention_days)
        finally:
            unlock_history(conn)
            conn.commit()
    return report


def _run(conn: Connection, report: MaintenanceReport, *, now: dt.datetime,
         retention_days: int) -> None:
    today = partitions.utc_day(now)
    oldest_kept = today - dt.timedelta(days=retention_days)
    existing = set(partitions.existing_days(conn))
    conn.commit()
    for offset in range(-1, partitions.AHEAD_DAYS + 1):
        day = today + dt.timedelta(days=offset)
        if day not in existing and _step(conn, report, lambda d=day: partitions.add_day(conn, d)):
            report.added.append(day)
    budget = MAX_DAYS_PER_RUN
    for day in sorted(d for d in existing if d < oldest_kept)[:budget]:
        rows = _step(conn, report, lambda d=day: _drop_expired(conn, report, d, partition=True))
        if rows is not None:
            report.dropped.append(day)
            report.rows_dropped += rows
    for day in _default_days_before(conn, oldest_kept)[:budget]:
        rows = _step(conn, report, lambda d=day: _drop_expired(conn, report, d, partition=False))
        report.rows_dropped += rows or 0
    through = conn.execute(select(HistoryState.rolled_up_through)).scalar()
    conn.commit()
    day = oldest_kept if through is None else max(oldest_kept, through + _DAY)
    while day < today and partitions.day_start(day + _DAY) + SETTLE <= now and budget:
        if _step(conn, report, lambda d=day: _roll_up_kept(conn, d)) is None:
            break
        report.rolled_up.append(day)
        day += _DAY
        budget -= 1
    budget = MAX_DAYS_PER_RUN
    while budget and _step(conn, report, lambda: counters.close(conn, now=now)) is not None:
        budget -= 1
    before = partitions.day_start(oldest_kept)
    report.alerts_deleted = _step(conn, report, lambda: alerts.prune(conn, before=before)) or 0
    with conn.begin():
        conn.execute(update(HistoryState).where(HistoryState.id == 1).values(
            last_run_at=now,
            partitions_dropped=HistoryState.partitions_dropped + len(report.dropped),
            rows_dropped=HistoryState.rows_dropped + report.rows_dropped,
        ))


def _step(conn: Connection, report: MaintenanceReport, action: Callable[[], T]) -> T | None:
    """Run ``action`` in a transaction of its own; what it returned, None on a lock timeout.

    A step that times out is rolled back whole, and counts nothing.
    """
    try:
        with conn.begin():
            conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"),
                         {"ms": f"{LOCK_TIMEOUT_MS}ms"})
            return action()
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            report.lock_timeouts += 1
            return None
        raise


def _unfinished(conn: Connection, day: dt.date) -> bool:
    start = partitions.day_start(day)
    return bool(conn.execute(select(exists().where(
        Invocation.scheduled_for >= start, Invocation.scheduled_for < start + _DAY,
        Invocation.status.in_(_UNFINISHED),
    ))).scalar())


def _drop_expired(conn: Connection, report: MaintenanceReport, day: dt.date, *,
                  partition: bool) -> int | None:
    """Roll up, then drop, an expired day; the rows it held, None if it is kept back."""
    if _unfinished(conn, day):
        report.kept_back.append(day)
        return None
    rows = roll_up_day(conn, day)
    counters.fold_day(conn, day)
    if partition:
        partitions.drop_day(conn, day)
    else:
        start = partitions.day_start(day)
        default = table(partitions.default_name("invocations"), sql_column("scheduled_for"))
        # Their attempts go with them (ON DELETE CASCADE, in the attempts' default).
        conn.execute(delete(default).where(default.c.scheduled_for >= start,
                                           default.c.scheduled_for < start + _DAY))
    return rows


def _default_days_before(conn: Connection, oldest_kept: dt.date) -> list[dt.date]:
    default = table(partitions.default_name("invocations"), sql_column("scheduled_for"))
    day = cast(func.timezone("UTC", default.c.scheduled_for), Date)
    days = conn.execute(select(day).distinct().where(
        default.c.scheduled_for < partitions.day_start(oldest_kept)).order_by(day)).scalars()
    result = list(days)
    conn.commit()
    return result


def _roll_up_kept(conn: Connection, day: dt.date) -> bool:
    roll_up_day(conn, day)
    # The day is over: its BRIN ranges get their summaries, so /metrics' live counts
    # (app.history.counters) skip its pages instead of reading its last range each time.
    partitions.summarize_day(conn, day)
    conn.execute(update(HistoryState).where(HistoryState.id == 1)
                 .values(rolled_up_through=day))
    return True
