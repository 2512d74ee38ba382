"""Which due occurrences run and which are recorded missed (pure: ``now`` is an argument).

An occurrence is *on time* when the dispatcher sees it at most ``misfire_grace_s`` after
its scheduled instant; on-time occurrences always run. A *misfired* one (the scheduler
was down, or the trigger was late past its grace) is handled by the trigger's policy:

- ``run_once``: only the latest due occurrence runs; earlier misfired ones are missed.
- ``run_all``: the latest :data:`MAX_CATCH_UP_RUNS` due occurrences run; older misfired
  ones are missed.
- ``skip``: every misfired occurrence is missed; the next future one runs as usual.

Nothing is dropped silently: every occurrence becomes either a run or a ``missed`` row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from app.enums import InvocationStatus, MisfirePolicy

#: ``run_all`` replays at most this many occurrences after an outage. A minutely trigger
#: after a day's outage would otherwise fire 1,440 times at once at its target, which
#: no receiver wants; the older ones are recorded missed.
MAX_CATCH_UP_RUNS = 100

#: A dispatcher records at most this many occurrences of one trigger per claim, so a
#: trigger with a long backlog (a minutely schedule after a month's outage) cannot hold
#: a batch for long; it stays due and is claimed again in the same tick.
MAX_OCCURRENCES_PER_CLAIM = 1000


@dataclasses.dataclass(frozen=True)
class Occurrence:
    scheduled_for: dt.datetime
    status: InvocationStatus  # PENDING (it runs) or MISSED


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
        due: due occurrences (all ``<= now``), oldest first. When ``exhausted`` is false
            the list was cut short; it must then hold at least ``limit +
            MAX_CATCH_UP_RUNS`` entries, so each decided occurrence knows whether enough
            later ones follow it.
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
