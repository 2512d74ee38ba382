"""The worker's reaper thread: takes back the runs of dead workers (app.firing.reap).

Every worker consuming ``cronbeat.runs`` runs one, every :data:`REAP_EVERY_S`, while its
deployment is the active one; the statement skips what another worker's reaper holds, so
any number of them is safe. The runs it takes back are published at once (after the
commit); if that publish fails, they are left unsent, and the next tick publishes them.

After this process failed to reach the database, it takes nothing back until it has
reached it without a break for :data:`TRUST_AFTER_S`: an outage stopped every process's
heartbeat, and no worker is judged dead until the live ones have heartbeated again. (A
PostgreSQL restart is recognized in the statement itself, whoever runs it.)
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import func, select

from app.deploys.processes import HEARTBEAT_INTERVAL_S, LIVE_TTL_S
from app.firing.reap import TAKE_BACK_LIMIT, take_back_dead
from app.models import InvocationKey
from app.queries import claims, sweep
from messaging.publisher import publish_runs
from tasks.celery_app import celery_app
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

#: How often a worker looks for dead workers' runs.
REAP_EVERY_S = 3.0
#: A claim of this worker that it does not hold is an orphan once it is this old: a claim
#: just committed is being handed to its delivery thread.
ORPHAN_AFTER_S = 30.0
#: How long this process must have reached the database without a break before it
#: judges others dead: every live process heartbeats in that time.
TRUST_AFTER_S = LIVE_TTL_S + HEARTBEAT_INTERVAL_S


class Reaper:
    """A daemon thread: :func:`reap_once` every REAP_EVERY_S while ``is_active()``.

    Given ``held`` (the invocation ids this worker holds) and ``process_id`` (the id its
    leases name), each pass also undoes this worker's orphaned claims: runs its lease
    names that it does not hold, claimed ORPHAN_AFTER_S ago or more, whose commit it
    never saw because the connection broke at the commit. They go back to pending with
    their attempt undone, and are published again.
    """

    def __init__(self, is_active: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic, *,
                 held: Callable[[], set[str]] | None = None,
                 process_id: Callable[[], uuid.UUID | None] | None = None) -> None:
        self._is_active = is_active
        self._clock = clock
        self._held = held
        self._process_id = process_id
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-reaper", daemon=True)
        #: Since when (this clock) every pass reached the database; None after a failure.
        #: Trusted from the start: a process just started has seen no outage.
        self._reachable_since: float | None = clock() - TRUST_AFTER_S

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopping.wait(REAP_EVERY_S):
            if not self._is_active():
                continue
            try:
                self.reap_once()
            except Exception:
                self._reachable_since = None
                log.warning("reaper: the pass failed; trying again", exc_info=True,
                            extra={"action": "run.reap_failed"})

    def reap_once(self) -> int:
        """One pass; returns how many runs it took back (0 while not trusted yet).

        Raises:
            sqlalchemy errors: the database failed; nothing was taken back.
        """
        runtime = get_runtime()
        now = self._clock()
        if self._reachable_since is None:
            # A trivial round trip: the first one after a failure starts the clock.
            with runtime.sessions.begin() as session:
                session.connection().exec_driver_sql("SELECT 1")
            self._reachable_since = now
        self._undo_orphans()
        if now - self._reachable_since < TRUST_AFTER_S:
            return 0
        taken, failed, sent_at = take_back_dead(runtime.sessions,
                                                runtime.settings.public_url)
        if not taken and not failed:
            return 0
        log.warning("reaper: took back %d runs of dead workers (%d of them failed: it was"
                    " their last attempt)", len(taken) + failed, failed,
                    extra={"action": "run.worker_lost", "pending": len(taken),
                           "failed": failed})
        if taken:
            _publish(taken, sent_at)
        return len(taken) + failed

    def _undo_orphans(self) -> int:
        """Undo this worker's orphaned claims; returns how many."""
        process = self._process_id() if self._process_id is not None else None
        if self._held is None or process is None:
            return 0
        keep = {uuid.UUID(text) for text in self._held()}  # before the statement
        runtime = get_runtime()
        with runtime.sessions.begin() as session:
            orphans = sweep.undo_orphaned_claims(
                session, process, keep, dt.timedelta(seconds=ORPHAN_AFTER_S),
                TAKE_BACK_LIMIT)
            if not orphans:
                return 0
            # The transaction's now(): the enqueued_at the statement wrote.
            sent_at = session.execute(select(func.now())).scalar_one()
        log.warning("reaper: %d runs were claimed for this worker by a commit it never"
                    " saw; back to pending, their attempt undone", len(orphans),
                    extra={"action": "run.orphans_undone", "count": len(orphans)})
        _publish(orphans, sent_at)
        return len(orphans)


def _publish(keys: list[InvocationKey], sent_at: dt.datetime) -> None:
    """Publish runs taken back (marked sent at ``sent_at``); if that fails, mark them
    unsent, and the next tick sends them."""
    try:
        publish_runs(celery_app, keys)
    except (BrokerError, RedisError, OSError):
        log.warning("reaper: publishing the runs failed; the next tick sends them",
                    exc_info=True, extra={"action": "run.reap_publish_failed"})
        with get_runtime().sessions.begin() as session:
            claims.unmark_published(session, [key.id for key in keys], sent_at)
