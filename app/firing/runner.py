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
   the invocation's final state, or return it to pending for a retry
   (:mod:`app.firing.outcome`).

The worker's delivery engine (tasks.engine) runs the same units of work for many runs
at once (:mod:`app.firing.batch`) and sends here only what a batch did not claim.

Nothing here imports Celery: a retry is returned to the caller (``retry_in_s``), which
publishes it after commit, and task targets are sent through the injected ``send_task``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.config import Settings
from app.db import in_transaction
from app.delivery.send import (
    DeliveryResult,
    SendTask,
    SendWebhook,
    Verdict,
    send_webhook,
)
from app.delivery.templating import render_message
from app.deploys import deploy
from app.enums import InvocationStatus, OverlapPolicy
from app.errors import PermanentError, TransientError
from app.firing.outcome import finish_retrying
from app.firing.runs import RunOutcome, StartedRun, log_ids, started_run
from app.models import Invocation, Trigger
from app.queries import attempts, claims, leases, locks
from app.schedule.kinds import schedule_of
from app.targets import Delivery, target_of

log = logging.getLogger(__name__)

#: A run whose row another transaction held at its claim is tried again after this.
ROW_BUSY_RETRY_S = 1.0
#: A run waiting under overlap ``buffer_one`` looks again this often whether the run
#: before it ended (how late after that end it starts, at most).
BUFFER_WAIT_S = 1.0
#: :func:`_not_runnable_reason`'s answer for a run that waits (overlap ``buffer_one``).
WAIT = (InvocationStatus.PENDING, "waiting for the run before it to end (overlap buffer_one)")
MISSED_BUFFER_ONE = ("missed: the run before it was still running and another run already"
                     " waited for it (overlap buffer_one)")


def _not_runnable_reason(
    session: Session, invocation: Invocation, trigger: Trigger | None
) -> tuple[InvocationStatus, str] | None:
    # For overlap skip this takes the trigger's run lock (until commit) before looking
    # for another running invocation; see locks.lock_trigger_runs.
    if invocation.cancel_requested:
        return InvocationStatus.CANCELLED, "cancelled: cancel requested"
    if trigger is None:
        return InvocationStatus.CANCELLED, "cancelled: the trigger was deleted"
    if not trigger.enabled and not invocation.manual and schedule_of(trigger).pausable:
        # Only a pausable kind's enabled = false means "paused" (kinds.Schedule.pausable).
        # A one-time trigger's means "fired" too: the dispatcher sets it in the
        # transaction that records the occurrence, and setting a new run_at fires it
        # again, so it cannot tell a pause from an earlier firing whose retry is still
        # due. Pausing one cancels its pending invocations explicitly (cancel_requested),
        # so it needs nothing here. Manual runs are the user's explicit request; pausing
        # leaves them alone.
        return InvocationStatus.CANCELLED, "cancelled: the trigger is disabled"
    if trigger.overlap_policy in (OverlapPolicy.SKIP, OverlapPolicy.BUFFER_ONE):
        locks.lock_trigger_runs(session, trigger.id)
        if leases.other_run_in_progress(session, trigger.id, invocation.id):
            if trigger.overlap_policy is OverlapPolicy.SKIP:
                return InvocationStatus.SKIPPED, "skipped: another run of the trigger is running"
            if leases.other_run_waiting(session, trigger.id, invocation.id,
                                        invocation.scheduled_for):
                return InvocationStatus.MISSED, MISSED_BUFFER_ONE
            return WAIT
    return None


def _start(
    session: Session, settings: Settings, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime | None, leased_by: uuid.UUID | None,
) -> StartedRun | RunOutcome:
    # The run's key: its day, read first when the message did not carry it (it then
    # looks in every day's partition once).
    day = scheduled_for or leases.day_of(session, invocation_id)
    if day is None:
        log.warning("run: no such invocation", extra={"action": "run.unknown",
                                                       "invocation_id": str(invocation_id)})
        return RunOutcome(status=None)
    key = (invocation_id, day)
    # The deploy fence first: it share-locks the scheduler state until this transaction
    # commits, so an activation of another deployment waits for this claim, and no
    # attempt of a superseded deployment can start after the activation returned. The
    # claim reads the active deployment in its own snapshot, taken after the lock. With
    # the tenant cap on, the tenant's claim lock comes in the same round trip.
    cap = settings.tenant_max_running
    attempts.lock_many(session, [key], cap)
    claimed = attempts.claim_many(session, [key], settings.deployment_id, cap, leased_by)
    if not claimed:
        # Not the common case: a duplicate, early, cancelled, deleted, paused, overlap
        # skip, a superseded deployment, or a tenant at its cap. The slow path looks at
        # each (a wrong day finds nothing: the path by id alone looks again).
        return _start_slow(session, settings, invocation_id, leased_by)
    return started_run(claimed[0], settings)


def _start_slow(
    session: Session, settings: Settings, invocation_id: uuid.UUID,
    leased_by: uuid.UUID | None,
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
    ids = log_ids(invocation.tenant_id, invocation.project_id, invocation.trigger_id,
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
    key = (invocation_id, invocation.scheduled_for)
    cap = settings.tenant_max_running
    # The tenant's claim lock (again, reentrant, or for the first time when the
    # message's day was wrong), before the trigger's run lock: the lock order.
    attempts.lock_many(session, [key], cap)
    closing = _not_runnable_reason(session, invocation, trigger)
    if closing is WAIT:
        # Its message comes back in a moment to look again; counted as sent now, so the
        # sweep does not take it for lost while it waits.
        claims.mark_published(session, [invocation_id], now)
        log.debug("run: waiting for the run before it (overlap buffer_one)",
                  extra={"action": "run.buffered", **ids})
        return RunOutcome(status=None, retry_in_s=BUFFER_WAIT_S)
    if closing is not None:
        status, reason = closing
        if not leases.close_without_running(session, invocation_id, status, reason):
            return RunOutcome(status=None)
        log.info("run: closed without running",
                 extra={"action": f"run.{status.value}", "reason": reason, **ids})
        return RunOutcome(status=status, attempt=invocation.attempt)
    # Past every check (overlap skip under the trigger's run lock): the one claim
    # statement, the tenant's cap included.
    claimed = attempts.claim_many(session, [key], settings.deployment_id, cap, leased_by,
                                  overlap_checked=True)
    if claimed:
        return started_run(claimed[0], settings)
    # The optional hard cap: one tenant's slow or hanging targets hold at most `cap`
    # delivery threads. Its next run is parked: it waits in the database, and a worker
    # takes it once the tenant is under its cap (app.queries.parking); the thread goes
    # to whatever is next, another tenant's run included.
    if attempts.park_capped(session, [key], settings.deployment_id, cap,
                            overlap_checked=True):
        log.debug("run: the tenant is at its cap, parked",
                  extra={"action": "run.tenant_capped", "cap": cap, **ids})
        return RunOutcome(status=None)
    # Pending, runnable, and neither claimed nor capped: another transaction holds its
    # row this moment (a claim of a duplicate message, a publish marking it sent; claims
    # skip locked rows). Its message is not dropped: it comes back in a moment, and then
    # runs, or finds the run taken and does nothing.
    log.debug("run: its row is busy, trying again shortly",
              extra={"action": "run.row_busy", **ids})
    return RunOutcome(status=None, retry_in_s=ROW_BUSY_RETRY_S)


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
    return target_of(trigger.target_kind).deliver(Delivery(
        row=trigger, body={**occurrence, "message": message},
        invocation_id=str(run.invocation_id), started_at=run.started_at, settings=settings,
        send_task=send_task, send_webhook=send_webhook_))


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
    leased_by: uuid.UUID | None = None,
) -> RunOutcome:
    """Run one attempt of an invocation, if it is due and nobody else runs it.

    ``scheduled_for``, when known, completes the invocation's key so the common path
    reads one day partition; a wrong one only sends the run down the path by id.
    ``leased_by`` is the worker's registry id, which the attempt's lease names.

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
            when its lease runs out. Recording the outcome is tried again until the
            lease ends first (outcome.finish_retrying), since its delivery happened.
    """
    invocation_id = uuid.UUID(str(invocation_id))
    started = in_transaction(sessions, lambda session: _start(
        session, settings, invocation_id, scheduled_for, leased_by))
    if isinstance(started, RunOutcome):
        return started
    result = deliver(started, settings, send_task, send_webhook_)
    return finish_retrying(sessions, started, result, rand, float(settings.tick_seconds),
                           public_url=settings.public_url)
