"""Plan one claimed trigger's due occurrences (pure: ``now`` is an argument)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from app.enums import MisfirePolicy
from app.misfire import MAX_CATCH_UP_RUNS, MAX_OCCURRENCES_PER_CLAIM, Occurrence, decide
from app.scheduling import next_run_at

_ONE_SECOND = dt.timedelta(seconds=1)

# next_run_at is pure, and triggers that share a schedule are due at the same instant
# (thousands of "0 * * * *" triggers at the top of the hour), so one computation serves
# them all within a batch.
_next_run_at = functools.lru_cache(maxsize=65_536)(next_run_at)


@dataclasses.dataclass(frozen=True)
class TriggerPlan:
    occurrences: list[Occurrence]
    #: The trigger's new next_run_at; None when it is finished (a one-time trigger).
    next_run_at: dt.datetime | None

    @property
    def finished(self) -> bool:
        return self.next_run_at is None


def plan_trigger(
    *,
    cron_expression: str | None,
    timezone: str,
    stored_next_run_at: dt.datetime,
    policy: MisfirePolicy,
    grace_s: int,
    now: dt.datetime,
    limit: int = MAX_OCCURRENCES_PER_CLAIM,
) -> TriggerPlan:
    """Return the occurrences due at ``now`` with their fate, and the next run time.

    A one-time trigger (no cron expression) has one occurrence, at ``stored_next_run_at``
    (its run_at), and is then finished. A cron trigger's occurrences are enumerated from
    the first real occurrence at or after ``stored_next_run_at`` (so a hand-edited
    next_run_at never produces an occurrence the schedule does not have), advancing from
    each scheduled instant, never from the wall clock.

    Raises:
        InvalidSchedule: the stored expression no longer parses (a bug elsewhere).
    """
    if cron_expression is None:
        occurrences = decide(
            [stored_next_run_at], exhausted=True, now=now, policy=policy, grace_s=grace_s
        )
        return TriggerPlan(occurrences, None)
    due: list[dt.datetime] = []
    wanted = limit + MAX_CATCH_UP_RUNS
    occurrence = _next_run_at(cron_expression, timezone, stored_next_run_at - _ONE_SECOND)
    while occurrence <= now and len(due) < wanted:
        due.append(occurrence)
        occurrence = _next_run_at(cron_expression, timezone, occurrence)
    exhausted = occurrence > now
    decided = decide(
        due, exhausted=exhausted, now=now, policy=policy, grace_s=grace_s, limit=limit
    )
    following = due[len(decided)] if len(decided) < len(due) else occurrence
    return TriggerPlan(decided, following)
