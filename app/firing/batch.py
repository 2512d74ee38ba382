"""Running many attempts at once: one claim for a batch of runs, one finish for many outcomes.

The worker's delivery engine (tasks.engine) receives run messages faster than one
transaction per attempt start and one per finish can keep up with, so it starts and
finishes them in batches. These are :mod:`app.firing.runner`'s units of work for a set
of runs: the same claim conditions, the same outcome rules (``plan_finish``), the same
log line per attempt. What a batch cannot decide alone goes to the single-run path:

* a run :func:`start_batch` neither claimed nor parked for its tenant's hard cap (a
  duplicate, an early retry, a cancel, overlap ``skip``, a superseded deployment) is run by
  :func:`app.firing.runner.run_invocation`, which looks at each case;
* if a batch's finish fails, each outcome is recorded on its own, first checked against
  what may have committed and tried again until its lease ends (``finish_retrying``).

A finish records the outcomes and their alerts in one transaction
(:func:`app.firing.outcome.observe_in`).

Nothing here imports Celery: the engine publishes retries and alerts after commit.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import in_transaction
from app.delivery.send import DeliveryResult
from app.firing.outcome import (
    finish_retrying,
    log_finished,
    observe_in,
    outcome_of,
    plan_finish,
)
from app.firing.runs import RunOutcome, StartedRun, started_run
from app.queries import attempts, parking

log = logging.getLogger(__name__)


def start_batch(
    sessions: sessionmaker[Session], settings: Settings, keys: Sequence[attempts.Key],
    leased_by: uuid.UUID | None = None, *, except_tenants: Sequence[str] = (),
    spare: bool = False,
) -> tuple[list[StartedRun], list[attempts.Key]]:
    """Claim each run of ``keys`` that the common path allows, in one transaction, as
    attempts leased by worker ``leased_by`` (its registry id).

    In the same transaction, the runs that only their tenant's hard cap kept from
    running are parked (app.queries.parking): they wait in the database, and their
    messages are done with. ``except_tenants``: claim no run of these. ``spare``: for a
    worker's spare threads (app.firing.fairness), which park nothing.

    Returns:
        The claimed runs, and the keys parked for their tenant's cap. Runs in neither
        were not claimed; the caller runs them one by one (or, on ``spare``
        threads, keeps them for a thread of its own).

    Raises:
        sqlalchemy errors: the database failed; nothing was claimed.
    """
    cap = settings.tenant_max_running

    def claim(session: Session) -> tuple[list[StartedRun], list[attempts.Key]]:
        attempts.lock_many(session, keys, cap)
        claimed = attempts.claim_many(session, keys, settings.deployment_id, cap,
                                      leased_by, except_tenants=except_tenants)
        taken = {item.invocation_id for item in claimed}
        parked = [] if spare else attempts.park_capped(
            session, [key for key in keys if key[0] not in taken],
            settings.deployment_id, cap)
        return [started_run(item, settings) for item in claimed], parked

    return in_transaction(sessions, claim)


def start_parked(
    sessions: sessionmaker[Session], settings: Settings, limit: int,
    leased_by: uuid.UUID | None = None, after: str = "",
) -> tuple[list[StartedRun], list[attempts.Key], str]:
    """Take up to ``limit`` parked runs (app.queries.parking) and claim them, in one
    transaction: a worker's free threads, when no message waits.

    Returns:
        The claimed runs; the keys to publish, runs taken that a batch cannot claim
        (cancelled, paused, overlap ``skip``, ...), now marked sent: the single-run
        path looks at each; and the last tenant taken from, for the next call's
        ``after``. Runs the hard cap still holds back stay parked.

    Raises:
        sqlalchemy errors: the database failed; nothing was claimed.
    """
    cap = settings.tenant_max_running

    def take(session: Session) -> tuple[list[StartedRun], list[attempts.Key], str]:
        keys, last = parking.take_parked(session, limit, after)
        if not keys:
            return [], [], last
        attempts.lock_many(session, keys, cap)
        claimed = attempts.claim_many(session, keys, settings.deployment_id, cap, leased_by)
        taken = {item.invocation_id for item in claimed}
        rest = [key for key in keys if key[0] not in taken]
        capped = {key[0] for key in attempts.park_capped(session, rest,
                                                         settings.deployment_id, cap)}
        published = parking.unpark(session, [key for key in rest if key[0] not in capped])
        return [started_run(item, settings) for item in claimed], published, last

    return in_transaction(sessions, take)


def park_waiting(sessions: sessionmaker[Session], keys: Sequence[attempts.Key]
                 ) -> list[attempts.Key]:
    """Park the pending runs of ``keys``: messages that waited in a worker too long for
    a thread (app.firing.fairness). Returns the keys parked; their messages are done with.

    Raises:
        sqlalchemy errors: the database failed; nothing was parked.
    """
    return in_transaction(sessions, lambda session: parking.park(session, keys))


def finish_batch(
    sessions: sessionmaker[Session],
    settings: Settings,
    done: Sequence[tuple[StartedRun, DeliveryResult]],
    rand: Callable[[], float] = random.random,
) -> tuple[list[RunOutcome], tuple[uuid.UUID, ...]]:
    """Record each delivered attempt's outcome and the alerts it raises, in one
    transaction.

    Returns:
        The outcomes, in the order of ``done``, and the alerts raised, to publish. An
        outcome that could not be recorded even on its own, by the end of its lease, has
        status None: the sweep takes the attempt back and runs it again.
    """
    max_countdown_s = float(settings.tick_seconds)
    plans = [plan_finish(run, result, rand, max_countdown_s) for run, result in done]
    try:
        with sessions.begin() as session:
            left = attempts.finish_many(session, plans)
            outcomes = [outcome_of(run, plan, status)
                        for (run, _), plan, status in zip(done, plans, left, strict=True)]
            alert_ids = observe_in(session, settings.public_url, [
                (run, outcome, result)
                for (run, result), outcome in zip(done, outcomes, strict=True)])
        for (run, result), plan, outcome in zip(done, plans, outcomes, strict=True):
            log_finished(run, result, plan, outcome)
        return outcomes, alert_ids
    except Exception as exc:
        # Nothing of it was written, or all of it was (a commit whose answer was lost):
        # one by one, each finish looks first for what it may have left, and one run's
        # outcome that cannot be written no longer holds up the others'.
        log.warning("run: recording %d outcomes together failed (%s); one by one now",
                    len(done), type(getattr(exc, "orig", None) or exc).__name__,
                    extra={"action": "run.finish_batch_failed"})
    outcomes = _finish_one_by_one(sessions, settings, done, rand, max_countdown_s)
    return outcomes, tuple(alert for outcome in outcomes for alert in outcome.alert_ids)


def _finish_one_by_one(
    sessions: sessionmaker[Session], settings: Settings,
    done: Sequence[tuple[StartedRun, DeliveryResult]], rand: Callable[[], float],
    max_countdown_s: float,
) -> list[RunOutcome]:
    # Each finish waits out a database outage until its own lease ends: the first one
    # waits for the database to come back, and the others then go through at once.
    outcomes: list[RunOutcome] = []
    for run, result in done:
        try:
            outcomes.append(finish_retrying(sessions, run, result, rand, max_countdown_s,
                                            public_url=settings.public_url,
                                            maybe_recorded=True))
        except (OperationalError, InterfaceError):
            log.error("run: the outcome could not be recorded before its lease ended; the"
                      " sweep takes the attempt back", exc_info=True,
                      extra={"action": "run.finish_failed", **run.log_ids})
            outcomes.append(RunOutcome(status=None, attempt=run.attempt))
        except Exception:
            log.error("run: the outcome could not be recorded; its lease brings it back",
                      exc_info=True, extra={"action": "run.finish_failed", **run.log_ids})
            outcomes.append(RunOutcome(status=None, attempt=run.attempt))
    return outcomes
