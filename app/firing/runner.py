"""Running one invocation: claim it, deliver it, record the outcome.

:func:`run_invocation` is the whole core of the ``run_trigger`` task, and is safe to call
any number of times for one invocation: a duplicate message, a late one, or one for an
invocation already finished changes nothing. One call is three units of work:

1. *Start* (one transaction): read the invocation and its trigger, then either close it
   without running (trigger deleted, a cron trigger disabled, cancel requested, another
   run of the trigger going under overlap ``skip``) or claim it as a new attempt with a
   lease and insert the attempt's row. Both are conditional writes in :mod:`app.queries.leases`,
   behind the deploy fence of :mod:`app.deploys.deploy` (only the active deployment's workers
   start attempts).
2. *Deliver* (no transaction): render the message template and send the webhook or the
   task message. Slow network I/O never holds a database connection or lock.
3. *Finish* (one transaction): record the attempt and, if it still holds the lease,
   the invocation's final state, or return it to pending for a retry.

Nothing here imports Celery: a retry is returned to the caller (``retry_in_s``), which
publishes it after commit, and task targets are sent through the injected ``send_task``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.alerting.rules import Observation
from app.config import Settings
from app.delivery.send import (
    DEFAULT_TASK_QUEUE,
    DeliveryResult,
    SendTask,
    Verdict,
    build_headers,
    encode_body,
    send_task_message,
    send_webhook,
)
from app.delivery.templating import render_message
from app.deploys import deploy
from app.enums import InvocationStatus, OverlapPolicy, TargetKind
from app.errors import PermanentError, TransientError
from app.firing.backoff import next_retry_delay_s
from app.models import Invocation, Trigger
from app.queries import attempts, batches, leases, locks

log = logging.getLogger(__name__)

# Pauses between tries of the finishing transaction after a connection error: 7.5 s in
# all, plus up to app.db.CONNECT_TIMEOUT_S per try, inside leases.LEASE_GRACE_S.
FINISH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)

SendWebhook = Callable[..., DeliveryResult]

#: A run whose tenant has CRONBEAT_TENANT_MAX_RUNNING invocations running tries again
#: after this.
TENANT_WAIT_S = 2.0


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What one call did: the status it left the invocation in, and whether to retry."""

    #: None when the call changed nothing (duplicate, early, or finished elsewhere).
    status: InvocationStatus | None
    attempt: int | None = None
    #: Publish run_trigger again after this many seconds (the row is pending until then).
    retry_in_s: float | None = None
    #: Alerts the outcome raised (app.alerting), to publish after the call.
    alert_ids: tuple[uuid.UUID, ...] = ()


@dataclasses.dataclass(frozen=True)
class StartedRun:
    """A claimed attempt and everything its delivery needs, read in the start transaction."""

    invocation_id: uuid.UUID
    attempt: int
    started_at: dt.datetime
    scheduled_for: dt.datetime
    trigger_id: uuid.UUID
    target: attempts.Target
    log_ids: dict[str, Any]
    #: The occurrence's time the body carries (a replay's original's).
    occurrence_at: dt.datetime
    tenant_id: str
    project_id: str
    manual: bool
    #: The project has an enabled alert channel: the outcome is observed (app.alerting).
    watched: bool


def _log_ids(
    tenant_id: str, project_id: str, trigger_id: uuid.UUID | None, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "project_id": project_id,
        "trigger_id": str(trigger_id) if trigger_id else None,
        "invocation_id": str(invocation_id),
        "scheduled_for": observe.iso_utc(scheduled_for),
    }


def _not_runnable_reason(
    session: Session, invocation: Invocation, trigger: Trigger | None
) -> tuple[InvocationStatus, str] | None:
    # For overlap skip this takes the trigger's run lock (until commit) before looking
    # for another running invocation; see locks.lock_trigger_runs.
    if invocation.cancel_requested:
        return InvocationStatus.CANCELLED, "cancelled: cancel requested"
    if trigger is None:
        return InvocationStatus.CANCELLED, "cancelled: the trigger was deleted"
    if not trigger.enabled and not invocation.manual and trigger.run_at is None:
        # Only a cron trigger's enabled = false means "paused". A one-time trigger's
        # means "fired" too: the dispatcher sets it in the transaction that records the
        # occurrence, and setting a new run_at fires it again, so it cannot tell a
        # pause from an earlier firing whose retry is still due. Pausing one cancels its
        # pending invocations explicitly (cancel_requested), so it needs nothing here.
        # Manual runs are the user's explicit request; pausing leaves them alone.
        return InvocationStatus.CANCELLED, "cancelled: the trigger is disabled"
    if trigger.overlap_policy is OverlapPolicy.SKIP:
        locks.lock_trigger_runs(session, trigger.id)
        if leases.other_run_in_progress(session, trigger.id, invocation.id):
            return InvocationStatus.SKIPPED, "skipped: another run of the trigger is running"
    return None


def _start(
    session: Session, settings: Settings, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime | None,
) -> StartedRun | RunOutcome:
    # The deploy fence first: it share-locks the scheduler state until this transaction
    # commits, so an activation of another deployment waits for this claim, and no
    # attempt of a superseded deployment can start after the activation returned. The
    # claim reads the active deployment in its own snapshot, taken after the lock. With
    # the tenant cap on, the tenant's claim lock comes in the same round trip.
    attempts.lock_for_claim(session, invocation_id, settings.tenant_max_running,
                            scheduled_for)
    claimed = attempts.claim(session, invocation_id, settings.deployment_id,
                             settings.tenant_max_running, scheduled_for)
    if claimed is None:
        # Not the common case: a duplicate, early, cancelled, deleted, paused, overlap
        # skip, or a superseded deployment. The slow path looks at each.
        return _start_slow(session, settings, invocation_id)
    return started_run(claimed, settings)


def started_run(claimed: attempts.Claimed, settings: Settings) -> StartedRun:
    ids = _log_ids(claimed.tenant_id, claimed.project_id, claimed.trigger_id,
                   claimed.invocation_id, claimed.scheduled_for)
    ids["attempt"] = claimed.attempt
    log.debug("run: attempt claimed", extra={"action": "run.claimed",
                                             "deployment_id": settings.deployment_id, **ids})
    return StartedRun(
        invocation_id=claimed.invocation_id,
        attempt=claimed.attempt,
        started_at=claimed.started_at,
        scheduled_for=claimed.scheduled_for,
        occurrence_at=claimed.occurrence_at or claimed.scheduled_for,
        tenant_id=claimed.tenant_id,
        project_id=claimed.project_id,
        manual=claimed.manual,
        watched=claimed.watched,
        trigger_id=claimed.trigger_id,
        target=claimed.target,
        log_ids=ids,
    )


def _start_slow(
    session: Session, settings: Settings, invocation_id: uuid.UUID
) -> StartedRun | RunOutcome:
    deploy.fence(session, settings.deployment_id)
    row = session.execute(
        select(Invocation, Trigger, func.now())
        .outerjoin(Trigger, Trigger.id == Invocation.trigger_id)
        .where(Invocation.id == invocation_id)
    ).first()
    if row is None:
        log.warning("run: no such invocation", extra={"action": "run.unknown",
                                                       "invocation_id": str(invocation_id)})
        return RunOutcome(status=None)
    invocation, trigger, now = row
    ids = _log_ids(invocation.tenant_id, invocation.project_id, invocation.trigger_id,
                   invocation.id, invocation.scheduled_for)
    if invocation.status is not InvocationStatus.PENDING:
        # A duplicate or late message: another message ran (or is running) it.
        log.debug("run: not pending, nothing to do",
                  extra={"action": "run.duplicate", "status": invocation.status.value, **ids})
        return RunOutcome(status=None)
    if (
        invocation.run_after is not None
        and invocation.run_after > now
        and not invocation.cancel_requested
    ):
        # Early: this worker's clock ran ahead of the database's when it honoured the
        # countdown. Publishing again for the remainder beats waiting for the sweep.
        return RunOutcome(status=None, retry_in_s=(invocation.run_after - now).total_seconds())
    closing = _not_runnable_reason(session, invocation, trigger)
    if closing is not None:
        status, reason = closing
        if not leases.close_without_running(session, invocation_id, status, reason):
            return RunOutcome(status=None)
        log.info("run: closed without running",
                 extra={"action": f"run.{status.value}", "reason": reason, **ids})
        return RunOutcome(status=status, attempt=invocation.attempt)
    assert trigger is not None
    cap = settings.tenant_max_running
    if cap and attempts.tenant_running(session, invocation.tenant_id) >= cap:
        # Fair tenants: one tenant's slow or hanging targets hold at most `cap` worker
        # threads; its next run waits a moment and tries again, and the thread goes to
        # whatever is next in the queue, another tenant's run included.
        if not attempts.defer(session, invocation_id, TENANT_WAIT_S):
            return RunOutcome(status=None)
        log.debug("run: the tenant is at its cap, waiting",
                  extra={"action": "run.tenant_capped", "cap": cap, **ids})
        return RunOutcome(status=None, retry_in_s=TENANT_WAIT_S)
    claim = leases.claim_attempt(
        session,
        invocation_id,
        lease_s=trigger.timeout_s + leases.LEASE_GRACE_S,
        deployment_id=settings.deployment_id,
    )
    if claim is None:
        return RunOutcome(status=None)
    leases.record_attempt_started(session, invocation_id, claim.attempt, settings.deployment_id)
    return started_run(attempts.Claimed(
        invocation_id=invocation_id, attempt=claim.attempt, started_at=claim.started_at,
        scheduled_for=invocation.scheduled_for, occurrence_at=invocation.occurrence_at,
        tenant_id=invocation.tenant_id,
        project_id=invocation.project_id, trigger_id=trigger.id,
        target=attempts.Target.of(trigger), manual=invocation.manual,
        watched=bool(observe.watched_scopes(
            session, [(invocation.tenant_id, invocation.project_id)])),
    ), settings)


def _deliver(
    run: StartedRun, settings: Settings, send_task: SendTask, send_webhook_: SendWebhook
) -> DeliveryResult:
    trigger = run.target
    occurrence = {
        "trigger": {"id": str(run.trigger_id), "name": trigger.name},
        "invocation": str(run.invocation_id),
        "scheduled_for": observe.iso_utc(run.occurrence_at),
        "attempt": run.attempt,
        "payload": trigger.payload,
    }
    message = None
    if trigger.message_template is not None:
        message = render_message(trigger.message_template, occurrence)
    body = {**occurrence, "message": message}
    if trigger.target_kind is TargetKind.TASK:
        assert trigger.task_name is not None, "ck_triggers_target_complete"
        queue = trigger.task_queue or DEFAULT_TASK_QUEUE
        if queue not in settings.task_queues:
            # The API refuses such a queue at save; this catches rows saved before it
            # did, or before the operator narrowed CRONBEAT_TASK_QUEUES. Our own queues
            # and kombu's keys are never in it (app.config), so a tenant cannot reach them.
            raise PermanentError(f"the task queue {queue!r} is not one of the operator's queues")
        return send_task_message(send_task, name=trigger.task_name, queue=queue, body=body)
    assert trigger.webhook_url is not None, "ck_triggers_target_complete"
    text = encode_body(body)
    headers = build_headers(
        trigger.webhook_headers,
        invocation_id=str(run.invocation_id),
        body=text,
        signing_secret=trigger.signing_secret,
        now=run.started_at,
    )
    return send_webhook_(
        method=trigger.webhook_method or "POST",
        url=trigger.webhook_url,
        headers=headers,
        body=text,
        timeout_s=float(trigger.timeout_s),
        allow_private=settings.allow_private_targets,
        now=run.started_at,
    )


def plan_finish(
    run: StartedRun, result: DeliveryResult, rand: Callable[[], float], max_countdown_s: float
) -> batches.Finish:
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
        part for part in (result.error, "finished after its lease was taken back") if part
    )
    # A retry due within a tick goes out now as a countdown message; a longer one waits
    # in the database (pending, run_after, enqueued_at NULL) and the dispatcher
    # publishes it when due (sweep.take_unpublished): no worker holds it meanwhile.
    published = retry_delay_s is not None and retry_delay_s <= max_countdown_s
    return batches.Finish(
        invocation_id=run.invocation_id, scheduled_for=run.scheduled_for,
        attempt=run.attempt, status=status, retry_delay_s=retry_delay_s,
        published=published, error=error, attempt_error=result.error,
        lost_error=lost_error, outcome=result.verdict.value,
        response_status=result.response_status, response_excerpt=result.response_excerpt,
    )


def finished(
    run: StartedRun, result: DeliveryResult, plan: batches.Finish, left: InvocationStatus | None
) -> RunOutcome:
    """The outcome of a recorded finish (``left``: the invocation's new status, None if
    the attempt no longer held it), logged as the attempt's one INFO line."""
    held = left is not None
    retry = (plan.retry_delay_s
             if left is InvocationStatus.PENDING and plan.published else None)
    outcome = RunOutcome(status=left, attempt=run.attempt, retry_in_s=retry)
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
    return outcome


def _finish(
    session: Session, run: StartedRun, result: DeliveryResult, rand: Callable[[], float],
    max_countdown_s: float,
) -> RunOutcome:
    plan = plan_finish(run, result, rand, max_countdown_s)
    fields = dataclasses.asdict(plan)
    for name in ("invocation_id", "scheduled_for", "attempt"):
        del fields[name]
    left = attempts.finish(session, plan.invocation_id, plan.scheduled_for, plan.attempt,
                           **fields)
    return finished(run, result, plan, left)


def deliver(
    run: StartedRun, settings: Settings, send_task: SendTask,
    send_webhook_: SendWebhook = send_webhook,
) -> DeliveryResult:
    """Deliver a claimed attempt; every error becomes a result, none escapes."""
    try:
        return _deliver(run, settings, send_task, send_webhook_)
    except TransientError as exc:
        return DeliveryResult(verdict=Verdict.TRANSIENT, error=exc.message)
    except PermanentError as exc:
        # A template error, a refused target, a bad signing secret: no retry can help.
        return DeliveryResult(verdict=Verdict.PERMANENT, error=exc.message)
    except Exception as exc:
        # A bug, or an input nobody foresaw. Escaping would leave the invocation running
        # until its lease ran out, then retry it into the same error. The same input
        # fails the same way, so fail it for good; only the type is recorded, because
        # the message may quote a header value, a URL token or a secret.
        log.error(
            "run: delivery raised an unexpected error",
            exc_info=True,
            extra={"action": "run.delivery_crashed", "error_type": type(exc).__name__,
                   **run.log_ids},
        )
        return DeliveryResult(
            verdict=Verdict.PERMANENT,
            error=f"delivery failed with an internal error ({type(exc).__name__})",
        )


def run_invocation(
    sessions: sessionmaker[Session],
    settings: Settings,
    invocation_id: uuid.UUID | str,
    *,
    send_task: SendTask,
    send_webhook_: SendWebhook = send_webhook,
    rand: Callable[[], float] = random.random,
    scheduled_for: dt.datetime | None = None,
) -> RunOutcome:
    """Run one attempt of an invocation, if it is due and nobody else runs it.

    ``scheduled_for``, when known, completes the invocation's key so the common path
    reads one day partition; a wrong one only sends the run down the path by id.

    Safe to call again for the same id at any time. Commits its own transactions (it is
    a unit of work's edge, called by the task); delivery happens between them.

    Returns:
        What the call did. If ``retry_in_s`` is set, the caller publishes run_trigger
        again with that countdown after this returns (the row is already committed
        pending with ``run_after``, so a lost publish is repaired by the sweep).

    Raises:
        Superseded: this process's deployment is no longer the active one; nothing was
            written, and the caller hands the message back to current workers.
        ValueError: ``invocation_id`` is not a UUID.
        sqlalchemy errors: the database failed; nothing was half-written (each unit of
            work is one transaction) and a claimed attempt is recovered by the sweep
            when its lease runs out. Recording the outcome is tried again for a few
            seconds first (FINISH_RETRY_DELAYS_S), since its delivery already happened.
    """
    invocation_id = uuid.UUID(str(invocation_id))
    started = start_retrying(sessions, settings, invocation_id, scheduled_for)
    if isinstance(started, RunOutcome):
        return started
    result = deliver(started, settings, send_task, send_webhook_)
    outcome = finish_retrying(sessions, started, result, rand, float(settings.tick_seconds))
    return observed(sessions, settings, started, outcome, result)


def observed(
    sessions: sessionmaker[Session], settings: Settings, run: StartedRun, outcome: RunOutcome,
    result: DeliveryResult,
) -> RunOutcome:
    """``outcome``, with the alerts it raised when its project is watched."""
    alert_ids = observe_runs(sessions, settings, [(run, outcome, result)])
    return dataclasses.replace(outcome, alert_ids=alert_ids) if alert_ids else outcome


def observe_runs(
    sessions: sessionmaker[Session], settings: Settings,
    runs: Sequence[tuple[StartedRun, RunOutcome, DeliveryResult]],
) -> tuple[uuid.UUID, ...]:
    """Apply the attempts' starts and outcomes to their triggers' alerts, in one
    transaction of their own: an alert never holds up, fails or undoes a run it is
    about. Runs of unwatched projects and manual runs raise nothing and cost nothing."""
    events: list[observe.Event] = []
    for run, outcome, result in runs:
        if run.watched and not run.manual:
            events += _events_of(run, outcome, result)
    if not events:
        return ()
    try:
        with sessions.begin() as session:
            now = session.execute(select(func.now())).scalar_one()
            return tuple(observe.observe(session, events, now,
                                         public_url=settings.public_url, published=True))
    except Exception:
        log.error("run: could not record the runs' alerts", exc_info=True,
                  extra={"action": "run.alerts_failed",
                         "invocation_ids": [str(run.invocation_id) for run, _, _ in runs]})
        return ()


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


def start_retrying(
    sessions: sessionmaker[Session], settings: Settings, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime | None,
) -> StartedRun | RunOutcome:
    # Workers do not ping a pooled connection before each use (a round trip per unit of
    # work): a connection PostgreSQL closed since (a restart, a failover, an idle
    # timeout) fails its first statement, SQLAlchemy drops the pool's connections of
    # that age, and the start is tried once more on a fresh one. Nothing was written
    # by the failed try: the connection died before its commit.
    for last in (False, True):
        try:
            with sessions.begin() as session:
                return _start(session, settings, invocation_id, scheduled_for)
        except DBAPIError as exc:
            if last or not exc.connection_invalidated:
                raise
            log.info("run: the database connection was gone, starting again",
                     extra={"action": "run.start_retry", "invocation_id": str(invocation_id)})
    raise AssertionError("unreachable: the last try returns or raises")


def finish_retrying(
    sessions: sessionmaker[Session], run: StartedRun, result: DeliveryResult,
    rand: Callable[[], float], max_countdown_s: float, *, maybe_recorded: bool = False,
) -> RunOutcome:
    # The delivery happened: if its outcome is not recorded, the lease runs out and the
    # sweep delivers it again. So a database blip (a failover, a restart, a dropped
    # connection) is waited out for a few seconds, well inside the lease's grace, before
    # giving up. Trying again is safe: the finish is a conditional update on this
    # attempt, and a try whose commit landed unacknowledged is recognized
    # (``maybe_recorded``: an earlier batch finish may have landed so, app.firing.batch).
    for tried, delay_s in enumerate((*FINISH_RETRY_DELAYS_S, None)):
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
                return _finish(session, run, result, rand, max_countdown_s)
        except DBAPIError as exc:
            transient = isinstance(exc, OperationalError | InterfaceError)
            if delay_s is None or not (transient or exc.connection_invalidated):
                raise
            log.warning(
                "run: recording the outcome failed, trying again",
                extra={"action": "run.finish_retry", "error_type": type(exc.orig).__name__,
                       "retry_in_s": delay_s, **run.log_ids},
            )
            time.sleep(delay_s)
    raise AssertionError("unreachable: the last try returns or raises")
