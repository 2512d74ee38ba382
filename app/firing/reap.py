"""Taking back the runs of workers that died: their slots are free within about 30 s.

A worker's attempt holds its run by a lease (``timeout_s`` + 60 s) that names the
worker's registry id (``leased_by``). When the worker dies, its row in the process
registry stops being refreshed; once it is :data:`app.deploys.processes.LIVE_TTL_S` old,
the other workers take the dead one's running runs back (:func:`take_back_dead`), as
the sweep does when a lease runs out: each goes back to pending for its next attempt,
or ends failed if that was its last, with its alert in the same transaction. The tenant
cap counts running runs, so a dead worker's runs stop counting against their tenant the
moment they are taken back, not minutes later.

A live worker's runs are never taken back: its presence thread refreshes its row every
5 s, whatever its delivery threads are doing. The caller guarantees that it has seen
the database for LIVE_TTL_S itself before it calls this (tasks.reaper), so that after a
database outage, which stopped every process's heartbeat, nobody is judged dead until
every live process had the time to heartbeat again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.alerting.rules import Observation
from app.deploys.processes import LIVE_TTL_S
from app.enums import InvocationStatus
from app.models import InvocationKey
from app.queries import sweep

#: The most runs one pass takes back.
TAKE_BACK_LIMIT = 1000


def failed_events(rows: Sequence[Any], error: str) -> list[observe.Event]:
    """The alert events of scheduled runs a take-back failed (their last attempt)."""
    return [
        observe.Event(tenant_id=row.tenant_id, project_id=row.project_id,
                      trigger_id=row.trigger_id, observation=Observation.FAILED,
                      scheduled_for=row.scheduled_for, invocation_id=row.id,
                      status=InvocationStatus.FAILED.value, error=error)
        for row in rows if row.trigger_id is not None and not row.manual
    ]


def take_back_dead(
    sessions: sessionmaker[Session], public_url: str | None
) -> tuple[list[InvocationKey], int, dt.datetime]:
    """Take back the running runs of dead workers, in one transaction with their alerts.

    Returns:
        The keys of the runs now pending (to publish after this returns; they count as
        sent at the returned instant, the transaction's), and how many ended failed.
    """
    failed: list[Any] = []
    with sessions.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        taken = sweep.take_dead_workers_leases(
            session, dt.timedelta(seconds=LIVE_TTL_S), TAKE_BACK_LIMIT, failed=failed)
        events = failed_events(failed, sweep.WORKER_LOST_ERROR)
        if events:
            observe.observe_watched(session, events, now, public_url=public_url)
    return taken, len(failed), now
