"""A trigger's runs per UTC day: counts by status and start lateness (the rollups' one query).

:func:`day_stats` aggregates live history; :func:`roll_up_day` writes its rows for one
day into ``trigger_day_stats`` (replacing what was there), and :func:`trigger_stats`
reads a trigger's days back: the rolled-up days from the rollups, the days after them
live. Start lateness is the first attempt's start minus the occurrence's time (runs
that never started have none).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Connection, Date, and_, cast, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from app.enums import InvocationStatus
from app.history.partitions import day_start
from app.models import HistoryState, Invocation, InvocationAttempt, TriggerDayStats

STATUSES = tuple(status.value for status in InvocationStatus)

_inv = Invocation.__table__
_att = InvocationAttempt.__table__
_stats = TriggerDayStats.__table__
_DAY = dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class DayStats:
    """One trigger's runs of one UTC day."""

    day: dt.date
    counts: dict[str, int]
    lateness_p50_s: float | None
    lateness_p95_s: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def day_stats(start: dt.date, end: dt.date, *conditions: Any) -> Any:
    """SELECT trigger_id, day, tenant_id, project_id, <count per status>, p50, p95, total.

    Over invocations scheduled in ``[start, end)`` (UTC days) that match ``conditions``,
    grouped by trigger and day.
    """
    first = _att.alias("first_attempt")
    lateness = func.extract("epoch", first.c.started_at - _inv.c.scheduled_for)
    day = cast(func.timezone("UTC", _inv.c.scheduled_for), Date).label("day")
    return (
        select(
            _inv.c.trigger_id,
            day,
            func.min(_inv.c.tenant_id).label("tenant_id"),
            func.min(_inv.c.project_id).label("project_id"),
            *(func.count().filter(_inv.c.status == status).label(status)
              for status in STATUSES),
            func.percentile_cont(0.5).within_group(lateness).label("lateness_p50_s"),
            func.percentile_cont(0.95).within_group(lateness).label("lateness_p95_s"),
            func.count().label("total"),
        )
        .select_from(_inv.outerjoin(first, and_(
            first.c.invocation_id == _inv.c.id,
            first.c.scheduled_for == _inv.c.scheduled_for,
            first.c.number == 1,
        )))
        .where(_inv.c.scheduled_for >= day_start(start),
               _inv.c.scheduled_for < day_start(end), *conditions)
        .group_by(_inv.c.trigger_id, day)
    )


def roll_up_day(conn: Connection, day: dt.date) -> int:
    """Write ``day``'s rollups (one row a trigger, replacing earlier ones); rows it read.

    The count includes rows without a trigger id (history from before migration 0007,
    whose trigger was deleted): they have no rollup row but are part of the day.
    """
    agg = day_stats(day, day + _DAY).cte("agg")
    columns = ["trigger_id", "day", "tenant_id", "project_id", *STATUSES,
               "lateness_p50_s", "lateness_p95_s"]
    upsert = insert(_stats).from_select(
        columns, select(*(agg.c[name] for name in columns)).where(agg.c.trigger_id.is_not(None))
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=["trigger_id", "day"],
        set_={**{name: upsert.excluded[name] for name in columns[2:]},
              "rolled_up_at": func.now()},
    ).returning(_stats.c.trigger_id).cte("written")
    total = conn.execute(
        select(func.coalesce(func.sum(agg.c.total), 0)).add_cte(upsert)
    ).scalar_one()
    return int(total)


def rolled_up_through(conn: Connection) -> dt.date | None:
    """The last day whose rollups are written (every earlier kept day has them too)."""
    return conn.execute(select(HistoryState.rolled_up_through)).scalar()


def days_of(
    conn: Connection, tenant_id: str, trigger_ids: list[uuid.UUID], *,
    first_day: dt.date, last_day: dt.date, project_id: str | None = None,
) -> dict[uuid.UUID, list[DayStats]]:
    """Each trigger's days in ``[first_day, last_day]`` that had runs, oldest first.

    Two statements whatever the count: days up to :func:`rolled_up_through` come from
    the rollups (kept forever), later days from the live history (a day or two in
    steady state). ``project_id`` narrows both to one project.
    """
    result: dict[uuid.UUID, list[DayStats]] = {t: [] for t in trigger_ids}
    if not trigger_ids:
        return result
    through = rolled_up_through(conn)
    if through is not None and through >= first_day:
        scope = [_stats.c.tenant_id == tenant_id, _stats.c.trigger_id.in_(trigger_ids)]
        if project_id is not None:
            scope.append(_stats.c.project_id == project_id)
        rows = conn.execute(select(_stats).where(
            *scope, _stats.c.day >= first_day, _stats.c.day <= min(through, last_day),
        ).order_by(_stats.c.day)).mappings()
        for row in rows:
            result[row["trigger_id"]].append(_of(row))
    live_from = first_day if through is None else max(first_day, through + _DAY)
    if live_from <= last_day:
        scope = [_inv.c.tenant_id == tenant_id, _inv.c.trigger_id.in_(trigger_ids)]
        if project_id is not None:
            scope.append(_inv.c.project_id == project_id)
        live = day_stats(live_from, last_day + _DAY, *scope).order_by("day")
        for row in conn.execute(live).mappings():
            result[row["trigger_id"]].append(_of(row))
    return result


def trigger_stats(
    conn: Connection, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    first_day: dt.date, last_day: dt.date,
) -> list[DayStats]:
    """One trigger's :func:`days_of` in its project."""
    return days_of(conn, tenant_id, [trigger_id], first_day=first_day, last_day=last_day,
                   project_id=project_id)[trigger_id]


def has_history(conn: Connection, tenant_id: str, project_id: str,
                trigger_id: uuid.UUID) -> bool:
    """Whether the trigger has rollups or invocations in this tenant's project."""
    def scoped(t: Any) -> Any:
        return exists().where(t.c.tenant_id == tenant_id, t.c.project_id == project_id,
                              t.c.trigger_id == trigger_id)
    return bool(conn.execute(select(or_(scoped(_stats), scoped(_inv)))).scalar())


def _of(row: Any) -> DayStats:
    p50, p95 = row["lateness_p50_s"], row["lateness_p95_s"]
    return DayStats(
        day=row["day"],
        counts={status: int(row[status]) for status in STATUSES},
        lateness_p50_s=None if p50 is None else float(p50),
        lateness_p95_s=None if p95 is None else float(p95),
    )
