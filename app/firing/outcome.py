"""How a delivered attempt's outcome is recorded: the rules, the write, its alerts.

:func:`plan_finish` decides what an attempt's result means (success, a retry after
backoff, or failure for good); ``_finish_one`` writes it for one run and
:func:`app.firing.batch.finish_batch` for many; :func:`outcome_of` turns what was
written into the run's outcome, and :func:`log_finished` into its one log line;
:func:`observe_in` applies outcomes to their triggers' alerts in the finish's own
transaction, so an outcome and its alert commit together or not at all: a worker killed
or a database lost between the two cannot leave a failure without its alert.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.alerting.rules import Observation
from app.delivery.send import DeliveryResult, Verdict
from app.enums import InvocationStatus
from app.firing.backoff import next_retry_delay_s
from app.firing.runs import RunOutcome, StartedRun
from app.queries import attempt_sql, attempts, leases

# The run path's one logger: its lines read the same whichever module writes them.
log = logging.getLogger("app.firing.runner")

# Pauses between tries of the finishing transaction after a connection error, the last
# one repeated: the finish is tried until the attempt's lease ends (StartedRun.lease_ends_at).
FINISH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 5.0)


def plan_finish(
    run: StartedRun, result: DeliveryResult, rand: Callable[[], float], max_countdown_s: float
) -> attempts.Finish:
    """What the finish of ``run``'s attempt writes, given how its delivery went."""
    trigger = run.target
    error = result.error
    retry_delay_s = None
    status: InvocationStatus | None = InvocationStatus.SUCCEEDED
    if result.verdict is Verdict.PERMANENT:
        status = InvocationStatus.FAILED
    elif result.verdict is Verdict.TRANSIENT:
        if run.attempt < trigger.max_attempts:
            retry_delay_s = next_retry_delay_s(
                run.attempt,
                float(trigger.backoff_base_s),
                float(trigger.backoff_cap_s),
                rand,
                result.retry_after_s,
            )
            status = None
            error = error or "transient failure"
        else:
            status = InvocationStatus.FAILED
            error = f"gave up after {run.attempt} attempts: {error}"
    lost_error = "; ".join(
        part for part in (result.error, attempt_sql.TAKEN_BACK_NOTE) if part
    )
    # A retry due within a tick goes out now as a countdown message; a longer one waits
    # in the database (pending, run_after, enqueued_at NULL) and the dispatcher
    # publishes it when due (sweep.take_unpublished): no worker holds it meanwhile.
    published = retry_delay_s is not None and retry_delay_s <= max_countdown_s
    return attempts.Finish(
        invocation_id=run.invocation_id, scheduled_for=run.scheduled_for,
        attempt=run.attempt, status=status, retry_delay_s=retry_delay_s,
        published=published, error=error, attempt_error=result.error,
        lost_error=lost_error, outcome=result.verdict.value,
        response_status=result.response_status, response_excerpt=result.response_excerpt,
    )


def outcome_of(
    run: StartedRun, plan: attempts.Finish, left: InvocationStatus | None
) -> RunOutcome:
    """The outcome of a recorded finish (``left``: the invocation's new status, None if
    the attempt no longer held it)."""
    retry = (plan.retry_delay_s
             if left is InvocationStatus.PENDING and plan.published else None)
    return RunOutcome(status=left, attempt=run.attempt, retry_in_s=retry)


def log_finished(
    run: StartedRun, result: DeliveryResult, plan: attempts.Finish, outcome: RunOutcome
) -> None:
    """The attempt's one INFO (or WARNING) line, once its finish committed."""
    held = outcome.status is not None
    attempt_error = result.error if held else plan.lost_error
    extra = {
        "action": "run.finished" if held else "run.finished_without_lease",
        "outcome": result.verdict.value,
        "status": outcome.status.value if outcome.status else None,
        "response_status": result.response_status,
        "retry_in_s": outcome.retry_in_s,
        **run.log_ids,
    }
    if attempt_error:
        # The reason is the tenant-facing text (last_error), written to hold no secret:
        # a status, or a connection failure in words, never a URL or a header value.
        log.warning("run: attempt failed: %s", attempt_error, extra=extra)
    else:
        log.info("run: attempt finished", extra=extra)


def _finish_one(
    session: Session, run: StartedRun, result: DeliveryResult, rand: Callable[[], float],
    max_countdown_s: float,
) -> tuple[attempts.Finish, RunOutcome]:
    plan = plan_finish(run, result, rand, max_countdown_s)
    left, = attempts.finish_many(session, [plan])
    return plan, outcome_of(run, plan, left)


def observe_in(
    session: Session, public_url: str | None,
    runs: Sequence[tuple[StartedRun, RunOutcome, DeliveryResult]],
) -> tuple[uuid.UUID, ...]:
    """Apply the attempts' starts and outcomes to their triggers' alerts, in the
    caller's transaction (the finish's). Runs of unwatched projects and manual runs raise
    nothing and cost nothing.

    Returns:
        The alerts raised, to publish after the commit.
    """
    events: list[observe.Event] = []
    for run, outcome, result in runs:
        if run.watched and not run.manual:
            events += _events_of(run, outcome, result)
    if not events:
        return ()
    now = session.execute(select(func.now())).scalar_one()
    return tuple(observe.observe_isolated(
        session, events, now, public_url=public_url, published=True,
        log_ids={"invocation_ids": [str(run.invocation_id) for run, _, _ in runs]}))


def _events_of(
    run: StartedRun, outcome: RunOutcome, result: DeliveryResult
) -> list[observe.Event]:
    late_s = None
    events: list[observe.Event] = []
    common = {"tenant_id": run.tenant_id, "project_id": run.project_id,
              "trigger_id": run.trigger_id, "scheduled_for": run.scheduled_for,
              "invocation_id": run.invocation_id}
    if run.attempt == 1:
        late_s = (run.started_at - run.scheduled_for).total_seconds()
        events.append(observe.Event(observation=Observation.STARTED, late_s=late_s, **common))
    if outcome.status in (InvocationStatus.SUCCEEDED, InvocationStatus.FAILED):
        events.append(observe.Event(
            observation=Observation(outcome.status.value), late_s=late_s,
            status=outcome.status.value, error=result.error, **common))
    return events


def finish_retrying(
    sessions: sessionmaker[Session], run: StartedRun, result: DeliveryResult,
    rand: Callable[[], float], max_countdown_s: float, *, public_url: str | None = None,
    maybe_recorded: bool = False, sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Record ``run``'s outcome and its alerts in one transaction, trying again after a
    lost connection until the attempt's lease ends.

    Returns:
        The outcome, with the alerts it raised.

    Raises:
        sqlalchemy errors: not recorded by the end of the lease (or not a connection
        error); the sweep takes the attempt back once its lease has expired.
    """
    # The delivery happened: if its outcome is not recorded, the lease runs out and the
    # sweep delivers it again. So a database outage (a failover, a restart, a dropped
    # connection) is waited out for as long as the lease lasts. Trying again is safe:
    # the finish is a conditional update on this attempt, and a try whose commit
    # landed unacknowledged is recognized (``maybe_recorded``: an earlier batch finish
    # may have landed so, app.firing.batch), with its alerts, which committed with it.
    delays = itertools.chain(FINISH_RETRY_DELAYS_S,
                             itertools.repeat(FINISH_RETRY_DELAYS_S[-1]))
    for tried in itertools.count():
        try:
            with sessions.begin() as session:
                if tried or maybe_recorded:
                    recorded = leases.recorded_finish(session, run.invocation_id, run.attempt)
                    if recorded is not None:
                        status, run_after_in_s = recorded
                        retry = run_after_in_s if status is InvocationStatus.PENDING else None
                        if retry is not None and retry > max_countdown_s:
                            retry = None  # the dispatcher publishes it when due
                        return RunOutcome(status=status, attempt=run.attempt, retry_in_s=retry)
                plan, outcome = _finish_one(session, run, result, rand, max_countdown_s)
                alert_ids = observe_in(session, public_url, [(run, outcome, result)])
            log_finished(run, result, plan, outcome)
            return dataclasses.replace(outcome, alert_ids=alert_ids, error=result.error)
        except DBAPIError as exc:
            transient = isinstance(exc, OperationalError | InterfaceError)
            delay_s = next(delays)
            if not (transient or exc.connection_invalidated) or clock() + delay_s > \
                    run.lease_ends_at:
                raise
            log.warning(
                "run: recording the outcome failed, trying again until its lease ends",
                extra={"action": "run.finish_retry", "error_type": type(exc.orig).__name__,
                       "retry_in_s": delay_s,
                       "lease_left_s": round(run.lease_ends_at - clock(), 1), **run.log_ids},
            )
            sleep(delay_s)
    raise AssertionError("unreachable: the loop returns or raises")
