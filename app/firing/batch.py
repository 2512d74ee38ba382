"""Running many attempts at once: one claim for a batch of runs, one finish for many outcomes.

The worker's delivery engine (tasks.engine) receives run messages faster than one
transaction per attempt start and one per finish can keep up with, so it starts and
finishes them in batches. These are :mod:`app.firing.runner`'s units of work for a set
of runs: the same claim conditions, the same outcome rules (``plan_finish``), the same
log line per attempt. What a batch cannot decide alone goes to the single-run path:

* a run :func:`start_batch` neither claimed nor put off for its tenant's cap (a
  duplicate, an early retry, a cancel, overlap ``skip``, a superseded deployment) is run by
  :func:`app.firing.runner.run_invocation`, which looks at each case;
* if a batch's finish fails, each outcome is recorded on its own, retried for a few
  seconds and first checked against what may have committed (``finish_retrying``).

Nothing here imports Celery: the engine publishes retries and alerts after commit.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.delivery.send import DeliveryResult
from app.firing.outcome import finish_retrying, finished, observe_runs, plan_finish
from app.firing.runner import TENANT_WAIT_S
from app.firing.runs import RunOutcome, StartedRun, started_run
from app.queries import batches

log = logging.getLogger(__name__)


def start_batch(
    sessions: sessionmaker[Session], settings: Settings, keys: Sequence[batches.Key]
) -> tuple[list[StartedRun], list[batches.Key]]:
    """Claim each run of ``keys`` that the common path allows, in one transaction.

    In the same transaction, the runs that only their tenant's cap kept from running
    wait TENANT_WAIT_S (the single path's rule, for the whole batch at once).

    Returns:
        The claimed runs, and the keys that wait for their tenant: the caller sends
        those again with a TENANT_WAIT_S countdown after this returns. Runs in neither
        were not claimed; the caller runs them one by one.

    Raises:
        sqlalchemy errors: the database failed; nothing was claimed.
    """
    cap = settings.tenant_max_running
    # As the single path: no pre-ping, a connection found dead is tried once more.
    for last in (False, True):
        try:
            with sessions.begin() as session:
                batches.lock_many(session, keys, cap)
                claimed = batches.claim_many(session, keys, settings.deployment_id, cap)
                taken = {item.invocation_id for item in claimed}
                waiting = batches.defer_capped(
                    session, [key for key in keys if key[0] not in taken],
                    settings.deployment_id, cap, TENANT_WAIT_S)
            return [started_run(item, settings) for item in claimed], waiting
        except DBAPIError as exc:
            if last or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable: the last try returns or raises")


def finish_batch(
    sessions: sessionmaker[Session],
    settings: Settings,
    done: Sequence[tuple[StartedRun, DeliveryResult]],
    rand: Callable[[], float] = random.random,
) -> tuple[list[RunOutcome], tuple[uuid.UUID, ...]]:
    """Record each delivered attempt's outcome, in one transaction.

    Then the watched runs' alerts, in one transaction of their own (as the single path
    does for one run).

    Returns:
        The outcomes, in the order of ``done``, and the alerts raised, to publish. An
        outcome that could not be recorded even on its own, for a few seconds, has
        status None: its lease runs out and the sweep runs it again.
    """
    max_countdown_s = float(settings.tick_seconds)
    plans = [plan_finish(run, result, rand, max_countdown_s) for run, result in done]
    try:
        with sessions.begin() as session:
            left = batches.finish_many(session, plans)
        outcomes = [finished(run, result, plan, status)
                    for (run, result), plan, status in zip(done, plans, left, strict=True)]
    except Exception as exc:
        # Nothing of it was written, or all of it was (a commit whose answer was lost):
        # one by one, each finish looks first for what it may have left, and one run's
        # outcome that cannot be written no longer holds up the others'.
        log.warning("run: recording %d outcomes together failed (%s); one by one now",
                    len(done), type(getattr(exc, "orig", None) or exc).__name__,
                    extra={"action": "run.finish_batch_failed"})
        outcomes = _finish_one_by_one(sessions, done, rand, max_countdown_s)
    alert_ids = observe_runs(
        sessions, settings,
        [(run, outcome, result) for (run, result), outcome in zip(done, outcomes, strict=True)])
    return outcomes, alert_ids


def _finish_one_by_one(
    sessions: sessionmaker[Session], done: Sequence[tuple[StartedRun, DeliveryResult]],
    rand: Callable[[], float], max_countdown_s: float,
) -> list[RunOutcome]:
    # Each finish waits out a database blip for a few seconds (FINISH_RETRY_DELAYS_S).
    # Once one gives up on the connection, the database is down: the rest are not
    # tried, so an outage holds the engine for one finish's retries, not for every run
    # of the batch. Any other failure is that run's own.
    outcomes: list[RunOutcome] = []
    for at, (run, result) in enumerate(done):
        try:
            outcomes.append(finish_retrying(sessions, run, result, rand, max_countdown_s,
                                            maybe_recorded=True))
        except (OperationalError, InterfaceError):
            log.error("run: %d outcomes could not be recorded; their leases bring them back",
                      len(done) - at, exc_info=True, extra={"action": "run.finish_failed"})
            outcomes += [RunOutcome(status=None, attempt=later.attempt)
                         for later, _ in done[at:]]
            break
        except Exception:
            log.error("run: the outcome could not be recorded; its lease brings it back",
                      exc_info=True, extra={"action": "run.finish_failed", **run.log_ids})
            outcomes.append(RunOutcome(status=None, attempt=run.attempt))
    return outcomes
