"""Work-conserving fairness between tenants: the rules, and a tick's share of messages.

Most installations are one company with one API key, so fairness must never throttle a
tenant that nobody competes with; when tenants do compete, one tenant's burst or hanging
targets must not hold another tenant's run back for more than about one batch. The
broker's queue is FIFO, so a backlog must not wait there. The rules:

1. **A tick sends at most one batch of runs as messages** (:data:`TICK_MESSAGES`, the
   engine's batch): the first ones it records, which alternate between tenants (the
   tick claims due triggers round-robin by tenant, app.queries.claims), so every
   tenant due in the tick has its first runs among them. The rest are *parked*:
   pending in the database, with no message (app.queries.parking). Another tenant's
   messages then wait behind at most one batch.
2. **A worker with free threads and no message waiting takes parked runs** from the
   database, an equal share of each tenant that has some, each one's oldest first
   (tasks.engine): a tenant alone keeps every thread of the fleet busy, and no run
   costs a round trip through the broker (the cheapest path: one statement takes a
   batch).
3. **While all of a worker's threads are taken**, a message of a tenant that has none
   of them starts on one of the spare threads (tasks.run_queue), so hanging targets of
   one tenant cannot hold up another's run; a message that waited a second for a
   thread is parked, so the broker hands the worker the messages behind it.
4. The hard cap (CRONBEAT_TENANT_MAX_RUNNING) is optional and off by default: a run it
   holds back is parked, never sent round the broker.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

#: The most runs a tick sends as messages; the rest wait parked. The delivery engine's
#: batch (tasks.engine.MAX_BATCH).
TICK_MESSAGES = 500


def parked_ats(runs: Sequence[bool], sent: int, now: dt.datetime,
               ) -> tuple[list[dt.datetime | None], int]:
    """When each occurrence of a tick's batch is parked (None: its message goes out),
    and how many runs the tick has recorded with this batch.

    Args:
        runs: whether each occurrence is a run (not a missed one, which is never sent).
        sent: the runs the tick recorded before this batch.
        now: the tick's instant.

    A run past TICK_MESSAGES is parked at ``now`` plus its rank in microseconds: the
    workers take each tenant's parked runs oldest first, so they keep the tick's order.
    """
    result: list[dt.datetime | None] = []
    for run in runs:
        if not run:
            result.append(None)
            continue
        result.append(None if sent < TICK_MESSAGES
                      else now + dt.timedelta(microseconds=sent - TICK_MESSAGES))
        sent += 1
    return result, sent
