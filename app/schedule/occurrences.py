"""Occurrences: which are due, which run and which are missed (pure: ``now`` is an argument).

One module for the one concept, used by the dispatcher and by edits alike:

* :meth:`app.schedule.kinds.Schedule.due` enumerates a trigger's due occurrences from
  its stored ``next_run_at``: the first real occurrence at or after it, then each next
  one from the scheduled instant, never from the wall clock. Both paths count this way,
  so their rows share keys ``(trigger_id, scheduled_for)``.
* The dispatcher: :func:`plan_trigger` decides each due occurrence's fate by the
  trigger's misfire policy (:func:`decide`). An occurrence is *on time* when the
  dispatcher sees it at most ``misfire_grace_s`` after its scheduled instant; on-time
  occurrences always run. A *misfired* one (the scheduler was down, or the trigger was
  late past its grace) follows the policy:

  - ``run_once``: only the latest due occurrence runs; earlier misfired ones are missed.
  - ``run_all``: the latest :data:`MAX_CATCH_UP_RUNS` due occurrences run; older
    misfired ones are missed.
  - ``skip``: every misfired occurrence is missed; the next future one runs as usual.

* An edit that moves a due trigger's ``next_run_at`` (a new schedule, a pause, a
  delete) takes its due occurrences away from the dispatcher, so it records them
  itself as ``missed`` (:func:`missed_rows`; the statement is
  :func:`app.queries.missed.record_missed`).

Nothing is dropped silently: every occurrence becomes either a run or a ``missed`` row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from app.enums import InvocationStatus, MisfirePolicy
from app.errors import InvalidSchedule
from app.models import Trigger
from app.schedule.kinds import Schedule, schedule_of

#: ``run_all`` replays at most this many occurrences after an outage. A minutely trigger
#: after a day's outage would otherwise fire 1,440 times at once at its target, which
#: no receiver wants; the older ones are recorded missed.
MAX_CATCH_UP_RUNS = 100

#: A dispatcher records at most this many occurrences of one trigger per claim, so a
#: trigger with a long backlog (a minutely schedule after a month's outage) cannot hold
#: a batch for long; it stays due and is claimed again in the same tick.
MAX_OCCURRENCES_PER_CLAIM = 1000


#: Of one trigger's missed occurrences in one claim or one edit, at most this many (the
#: latest) are recorded one row each; older ones become one summary row with their count.
#: One rule for the dispatcher and for edits (:func:`fold_missed`), so a minutely
#: trigger behind by a day writes about a hundred rows, not 1,440.
MAX_MISSED_ROWS = 100


@dataclasses.dataclass(frozen=True)
class Occurrence:
    scheduled_for: dt.datetime
    status: InvocationStatus  # PENDING (it runs) or MISSED
    #: A missed row's reason when it is not the plain one (a summary row's count).
    reason: str | None = None


def fold_missed(
    occurrences: Sequence[Occurrence], reason: str, *, complete: bool,
    up_to: dt.datetime | None = None,
) -> list[Occurrence]:
    """Return the rows to record: every run, and missed ones folded by the one rule.

    ``complete`` says the list reaches the trigger's present (the next occurrence is
    after now): then the latest :data:`MAX_MISSED_ROWS` missed ones keep a row each.
    Otherwise more are due after these, so all of these missed ones are older than those
    and fold. Folded occurrences become one row at the latest of them, whose reason
    counts them; their other instants get no row. ``up_to`` (an edit's now) adds that the
    occurrences after the list, up to that instant, were missed too.
    """
    missed = [o for o in occurrences if o.status is InvocationStatus.MISSED]
    keep = MAX_MISSED_ROWS if complete else 0
    folded = missed[: max(len(missed) - keep, 0)]
    if not folded or (len(folded) == 1 and up_to is None):
        return list(occurrences)
    first, last = folded[0].scheduled_for, folded[-1].scheduled_for
    text = (f"{reason} (this row stands for {len(folded)} missed occurrences from "
            f"{first.isoformat()} to {last.isoformat()}")
    text += f", and so were the later ones up to {up_to.isoformat()})" if up_to else ")"
    gone = {o.scheduled_for for o in folded[:-1]}
    return [
        Occurrence(last, InvocationStatus.MISSED, text) if o.scheduled_for == last else o
        for o in occurrences
        if o.scheduled_for not in gone
    ]


def decide(
    due: Sequence[dt.datetime],
    *,
    exhausted: bool,
    now: dt.datetime,
    policy: MisfirePolicy,
    grace_s: int,
    limit: int = MAX_OCCURRENCES_PER_CLAIM,
) -> list[Occurrence]:
    """Decide the fate of the first ``limit`` occurrences in ``due``.

    Args:
        due: due occurrences (``<= now``, or later ones taken ahead), oldest first.
            When ``exhausted`` is false the list was cut short; it must then hold at
            least ``limit + MAX_CATCH_UP_RUNS`` entries, so each decided occurrence
            knows whether enough later ones follow it.
        exhausted: ``due`` holds every due occurrence (the next one is after ``now``).

    Returns:
        One :class:`Occurrence` per decided entry, in order.
    """
    if not exhausted and len(due) < limit + MAX_CATCH_UP_RUNS:
        raise ValueError("a cut-short list needs limit + MAX_CATCH_UP_RUNS entries")
    grace = dt.timedelta(seconds=grace_s)
    decided: list[Occurrence] = []
    for index, scheduled_for in enumerate(due[:limit]):
        later = len(due) - index - 1 if exhausted else MAX_CATCH_UP_RUNS
        if now - scheduled_for <= grace:
            runs = True
        elif policy is MisfirePolicy.RUN_ONCE:
            runs = later == 0
        elif policy is MisfirePolicy.RUN_ALL:
            runs = later < MAX_CATCH_UP_RUNS
        else:
            runs = False
        status = InvocationStatus.PENDING if runs else InvocationStatus.MISSED
        decided.append(Occurrence(scheduled_for, status))
    return decided


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
    schedule: Schedule,
    stored_next_run_at: dt.datetime,
    policy: MisfirePolicy,
    grace_s: int,
    now: dt.datetime,
    limit: int = MAX_OCCURRENCES_PER_CLAIM,
    missed_reason: str = "missed",
    until: dt.datetime | None = None,
) -> TriggerPlan:
    """Return the occurrences due at ``now`` with their fate, and the next run time.

    ``until`` (after ``now``) takes the occurrences up to that instant too: those after
    ``now`` are on time, and run when their instant comes (a held kind's, one tick
    ahead: app.schedule.kinds.Schedule.held).

    Missed occurrences are folded by :func:`fold_missed` (``missed_reason`` is the
    plain reason a summary row's text starts with).

    The occurrences are enumerated from the first real occurrence at or after
    ``stored_next_run_at`` (so a hand-edited next_run_at never produces an occurrence
    the schedule does not have), advancing from each scheduled instant, never from the
    wall clock. A schedule with none left (a one-time trigger, once fired) is finished.

    Raises:
        InvalidSchedule: the stored schedule no longer computes (a bug elsewhere).
    """
    until = now if until is None else until
    due, occurrence = schedule.due(stored_next_run_at, until, limit + MAX_CATCH_UP_RUNS)
    exhausted = occurrence is None or occurrence > until
    decided = decide(
        due, exhausted=exhausted, now=now, policy=policy, grace_s=grace_s, limit=limit
    )
    following = due[len(decided)] if len(decided) < len(due) else occurrence
    complete = exhausted and len(decided) == len(due)
    return TriggerPlan(fold_missed(decided, missed_reason, complete=complete), following)


RESCHEDULED_REASON = "missed: the schedule was changed before it ran"
DISABLED_REASON = "missed: the trigger was disabled before it ran"
DELETED_REASON = "missed: the trigger was deleted before it ran"

#: The name this bound had when only edits folded their missed occurrences.
MAX_MISSED_PER_EDIT = MAX_MISSED_ROWS

def missed_rows(
    old: Trigger, next_run_at: dt.datetime | None, *, now: dt.datetime, reason: str
) -> list[dict[str, Any]]:
    """Return the ``missed`` invocation rows an edit of ``old`` must record.

    ``old`` is the trigger as stored before the edit and ``next_run_at`` what the edit
    sets (None: disabled or deleted). Nothing is due, or nothing is taken away, unless
    ``old`` is enabled, its ``next_run_at`` is at or before ``now`` and the edit changes it.
    """
    if (
        not old.enabled
        or old.next_run_at is None
        or old.next_run_at > now
        or next_run_at == old.next_run_at
    ):
        return []
    due, more = _due_for_edit(old, now)
    missed = [Occurrence(at, InvocationStatus.MISSED) for at in due]
    recorded = fold_missed(missed, reason, complete=not more, up_to=now if more else None)
    return [
        {
            "trigger_id": old.id, "tenant_id": old.tenant_id, "project_id": old.project_id,
            "scheduled_for": o.scheduled_for, "status": InvocationStatus.MISSED.value,
            "manual": False, "attempt": 0, "created_at": now, "finished_at": now,
            "last_error": o.reason or reason,
        }
        for o in recorded
    ]


def _due_for_edit(old: Trigger, now: dt.datetime) -> tuple[list[dt.datetime], bool]:
    # The due instants (as many as a dispatcher's claim enumerates) and whether more
    # are due after them.
    assert old.next_run_at is not None
    try:
        due, following = schedule_of(old).due(
            old.next_run_at, now, MAX_OCCURRENCES_PER_CLAIM + MAX_CATCH_UP_RUNS)
    except InvalidSchedule:
        # A stored schedule that no longer computes (the dispatcher records it
        # failed): the one instant known to be due is recorded.
        return [old.next_run_at], False
    return due, following is not None and following <= now
