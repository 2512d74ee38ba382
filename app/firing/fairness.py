"""Work-conserving fairness between tenants: the rules, and a tick's share of messages.

Most installations are one company with one API key, so fairness must never throttle a
tenant that nobody competes with; when tenants do compete, one tenant's burst or hanging
targets must not hold another tenant's run back for more than about one batch. The
broker's queue is FIFO, so a backlog must not wait there. The rules:

1. **A tick sends at most one batch of each tenant's runs as messages**
   (:data:`TENANT_BURST`, the engine's batch); the rest of that tenant's runs are
   *parked*: pending in the database with no message (app.queries.parking). Another
   tenant's messages then wait behind at most one batch of it. The tick claims due
   triggers round-robin by tenant (app.queries.claims), so its messages alternate.
2. **A worker with free threads and no message waiting takes parked runs** from the
   database, an equal share of each tenant that has some, each one's oldest first
   (tasks.engine): a tenant alone keeps every thread of the fleet busy, and without a
   round trip through the broker per run.
3. **While all of a worker's threads are taken**, a message of a tenant that has none
   of them starts on one of the spare threads (tasks.run_queue), so hanging targets of
   one tenant cannot hold up another's run; a message that waited a second for a
   thread is parked, so the broker hands the worker the messages behind it.
4. The hard cap (CRONBEAT_TENANT_MAX_RUNNING) is optional and off by default: a run it
   holds back is parked, never sent round the broker.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Sequence

#: The most runs of one tenant a tick sends as messages; the rest wait parked. The
#: delivery engine's batch (tasks.engine.MAX_BATCH).
TENANT_BURST = 500


def parked_ats(
    tenant_ids: Sequence[str], runs: Sequence[bool], sent: collections.Counter[str],
    now: dt.datetime,
) -> list[dt.datetime | None]:
    """When each occurrence of a tick's batch is parked; None: its message goes out.

    Args:
        tenant_ids: each occurrence's tenant.
        runs: whether it is a run (not a missed occurrence, which is never sent).
        sent: the runs per tenant this tick recorded so far; updated.
        now: the tick's instant.

    A tenant's runs past TENANT_BURST are parked at ``now`` plus their rank in
    microseconds: the workers take parked runs oldest first, so this tick's stay in the
    order the tick claimed them, after the earlier ticks' ones.
    """
    result: list[dt.datetime | None] = []
    for tenant_id, run in zip(tenant_ids, runs, strict=True):
        if not run:
            result.append(None)
            continue
        rank = sent[tenant_id]
        sent[tenant_id] += 1
        result.append(None if rank < TENANT_BURST
                      else now + dt.timedelta(microseconds=rank - TENANT_BURST))
    return result
