"""One dispatcher tick: claim due triggers, record invocations, advance, publish, sweep.

The tick reads the clock once (the database's ``now()``) and uses that instant for every
batch, so the set of due work is fixed and the loop ends. Each batch is one transaction;
messages are published only after it commits (the invocation row is the outbox), and
the sweep re-publishes what was committed but never delivered.

Second precision for one-time and interval triggers (app.schedule.kinds.Schedule.held):
the tick also takes their occurrences due before the next tick (``hold_s`` ahead). Each
is recorded pending with ``run_after`` at its instant and published with that instant as
its ETA (past the tick's messages, it waits parked until its instant instead); the
worker holds the message and claims it only then, so whatever happens in between is
obeyed: a pause or a cancel cancels the row (nothing runs), a schedule change cancels
the held runs of the old schedule, an activation makes the claim hand the message to
the new deployment, and a holder that dies loses only the message (the sweep publishes
the pending row again). Cron stays on its minute ticks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import observe
from app.alerting.rules import Observation
from app.deploys import deploy
from app.enums import InvocationStatus, MisfirePolicy
from app.errors import CronbeatError
from app.firing import fairness, resend
from app.models import InvocationKey
from app.queries import claims
from app.schedule.kinds import schedule_of
from app.schedule.occurrences import TriggerPlan, plan_trigger

log = logging.getLogger(__name__)

class Publish(Protocol):
    """Publishes one run_trigger message per invocation (by its key), held by the worker
    until ``eta`` if given; returns how many."""

    def __call__(self, keys: Sequence[InvocationKey], eta: dt.datetime | None = None,
                 ) -> int: ...


#: The invocation id of the oldest run message still waiting in the queue, None if none
#: (or unknown): messaging.backlog.oldest_waiting_run.
OldestWaiting = Callable[[], uuid.UUID | None]
#: The broker's epoch token (messaging.backlog.broker_epoch), None when unreadable.
BrokerEpoch = Callable[[], str | None]

#: A tick takes held occurrences this much beyond the next tick's instant, so a next
#: tick that comes late (beat or the dispatcher busy) by up to this much still finds
#: its first occurrences taken and held.
HOLD_MARGIN_S = 15

#: A safety net, not a tuning knob: a tick whose loop claims this many batches has a bug
#: (the due set is fixed by the tick's ``now``), and stopping beats spinning forever.
MAX_BATCHES_PER_TICK = 10_000

#: A batch writes at most about this many invocation rows (runs and missed rows): the
#: claimed triggers past it are left as they were, still due, for the next batch of
#: the same tick. One trigger's claim writes at most MAX_OCCURRENCES_PER_CLAIM... in
#: practice far fewer, since missed occurrences fold (occurrences.fold_missed).
MAX_ROWS_PER_BATCH = 10_000


@dataclasses.dataclass
class TickReport:
    """What one tick did; the CLI prints it as JSON and the task returns it."""

    now: dt.datetime | None = None
    claimed: int = 0  # triggers claimed (locked and advanced)
    created: int = 0  # pending invocations recorded
    parked: int = 0  # of those, parked: no message, a worker takes them (fairness)
    held: int = 0  # of those, taken ahead: held by a worker until their instant
    missed: int = 0  # occurrences recorded missed
    published: int = 0  # messages published for new invocations
    republished: int = 0  # pending invocations whose lost message was published again
    retries: int = 0  # unsent runs published: retries whose wait ended, failed publishes
    leases_expired: int = 0  # running invocations taken back after their lease ran out
    batches: int = 0
    duration_ms: float = 0.0

    @property
    def swept(self) -> int:
        """Invocations the sweep put back on the broker (lost messages, expired leases)."""
        return self.republished + self.leases_expired

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["now"] = self.now.isoformat() if self.now else None
        values["swept"] = self.swept
        return values


@dataclasses.dataclass(frozen=True)
class DispatchOptions:
    batch_size: int = 5000
    republish_after_s: int = 300
    #: This process's CRONBEAT_DEPLOYMENT_ID; claims commit only while it is the active one.
    deployment_id: str | None = None
    #: A trigger's misfire grace is never taken below this: an occurrence is always
    #: seen some time after its instant (up to one tick interval), and a grace shorter
    #: than that would record every run of a ``skip`` trigger as missed.
    min_grace_s: int = 0
    #: CRONBEAT_PUBLIC_URL, for the console links of the alerts a tick raises.
    public_url: str | None = None
    #: How far after its instant a tick also takes one-time and interval occurrences,
    #: to be held until their instant (0: none; see the module doc).
    hold_s: int = 0


def dispatch_tick(
    sessions: sessionmaker[Session],
    publish: Publish,
    options: DispatchOptions,
    *,
    now: dt.datetime | None = None,
    oldest_waiting: OldestWaiting | None = None,
    broker_epoch: BrokerEpoch | None = None,
) -> TickReport:
    """Run one tick until nothing due at ``now`` is left; then sweep.

    Args:
        now: the tick's instant; by default the database's ``now()``, read once.
        oldest_waiting: reads the run queue's oldest waiting message, so that the
            sweep re-publishes only lost messages, never a backlog's; without it, age
            alone decides.
        broker_epoch: reads the broker's epoch: when it differs from the one the last
            tick recorded, the broker lost its queues, and every pending run is
            published again at once, not once it looks stale.

    Returns:
        What the tick did.

    Raises:
        TransientError: publishing failed. What was committed stays committed, and
            the sweep of a later tick publishes it.
    """
    started = time.perf_counter()
    report = TickReport()
    if now is None:
        with sessions.begin() as session:
            now = session.execute(select(func.now())).scalar_one()
    report.now = now
    try:
        try:
            _dispatch_all(sessions, publish, now, options, report)
        except deploy.Superseded:
            raise
        except Exception:
            # Whatever broke this tick's dispatching (a broker outage, a database
            # blip), the sweep still gets its turn: it repairs what earlier ticks left.
            _sweep(sessions, publish, now, options, report, oldest_waiting, broker_epoch)
            raise
        _sweep(sessions, publish, now, options, report, oldest_waiting, broker_epoch)
    finally:
        report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info("tick done", extra={"action": "dispatch.tick", "tick": report.as_dict()})
    with sessions.begin() as session:
        claims.record_tick(
            session,
            started_at=now,
            duration_ms=report.duration_ms,
            deployment_id=options.deployment_id,
            report=report.as_dict(),
        )
    return report


def _dispatch_all(
    sessions: sessionmaker[Session],
    publish: Publish,
    now: dt.datetime,
    options: DispatchOptions,
    report: TickReport,
) -> None:
    """Claim and record batches until nothing due at ``now`` is left; publish each."""
    # Publishing batch N overlaps claiming batch N+1: the database round trips release
    # the GIL while the publisher thread encodes messages. One thread keeps the batches
    # in order. Once a publish failed, no further batch is committed: the broker is
    # down, and the triggers left due are claimed by the next tick.
    sent = 0  # runs recorded so far: past one batch, they are parked (fairness)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish") as publisher:
        futures = []
        for _ in range(MAX_BATCHES_PER_TICK):
            if any(f.done() and f.exception() is not None for f in futures):
                break
            new_ids, sent = _dispatch_batch(sessions, now, options, report, sent)
            if new_ids is None:
                break
            if new_ids:
                futures.append(publisher.submit(_publish, sessions, publish, new_ids, now))
        else:
            log.error("tick stopped after %d batches", MAX_BATCHES_PER_TICK,
                      extra={"action": "dispatch.runaway"})
        failures = []
        for future in futures:
            try:
                report.published += future.result()
            except Exception as exc:
                failures.append(exc)
    if failures:
        # Committed but unpublished rows are safe: they are marked unsent, and the
        # next tick's sweep publishes them (sweep.take_unpublished).
        raise failures[0]


def _dispatch_batch(
    sessions: sessionmaker[Session], now: dt.datetime, options: DispatchOptions,
    report: TickReport, sent: int,
) -> tuple[list[InvocationKey] | None, int]:
    """Claim, record and advance one batch in one transaction.

    ``sent``: the runs the tick recorded so far; past one batch, runs are parked, with
    no message (app.firing.fairness).

    Returns:
        The ids of the pending invocations it recorded, to publish after the commit
        (None when nothing was due), and the runs recorded so far.
    """
    # Atomic because the claim, the invocation rows and the advanced next_run_at must
    # all land or none: a crash after the commit leaves rows whose messages the sweep
    # publishes; a crash before it leaves the triggers due for the next tick.
    with sessions.begin() as session:
        # The fence: share-locks the scheduler state until this commit, so an activation
        # of another deployment either waits for this batch or stops it here.
        deploy.fence(session, options.deployment_id)
        hold_until = now + dt.timedelta(seconds=options.hold_s)
        rows = claims.claim_due_triggers(session, now, options.batch_size,
                                         hold_until=hold_until)
        if not rows:
            return None, sent
        trigger_ids: list[uuid.UUID] = []
        tenant_ids: list[str] = []
        project_ids: list[str] = []
        scheduled_fors: list[dt.datetime] = []
        misseds: list[bool] = []
        reasons: list[str | None] = []
        advanced: list[Row[Any]] = []
        next_run_ats: list[dt.datetime | None] = []
        last_scheduled: list[dt.datetime | None] = []
        alert_events: dict[uuid.UUID, observe.Event] = {}
        for row in rows:
            try:
                schedule = schedule_of(row)
                plan = plan_trigger(
                    schedule=schedule,
                    stored_next_run_at=row.next_run_at,
                    policy=MisfirePolicy(row.misfire_policy),
                    grace_s=max(row.misfire_grace_s, options.min_grace_s),
                    now=now,
                    missed_reason=claims.MISSED_REASON,
                    until=hold_until if schedule.held else None,
                )
            except (CronbeatError, ValueError, OverflowError) as exc:
                # One trigger whose schedule no longer computes (a zone dropped from
                # tzdata, a hand-edited row) must not stop every other trigger's runs.
                # Its due occurrence is recorded failed, saying why, and it is disabled.
                plan = _unschedulable(session, row, now, exc)
                alert_events[row.id] = observe.Event(
                    tenant_id=row.tenant_id, project_id=row.project_id, trigger_id=row.id,
                    observation=Observation.FAILED, scheduled_for=row.next_run_at,
                    status=InvocationStatus.FAILED.value,
                    error="the trigger's schedule cannot be computed; trigger disabled")
            if advanced and len(trigger_ids) + len(plan.occurrences) > MAX_ROWS_PER_BATCH:
                # The batch's budget is spent: this trigger and the rest of the claim
                # stay as they are (due), and the next batch claims them again.
                break
            for occurrence in plan.occurrences:
                trigger_ids.append(row.id)
                tenant_ids.append(row.tenant_id)
                project_ids.append(row.project_id)
                scheduled_fors.append(occurrence.scheduled_for)
                misseds.append(occurrence.status is InvocationStatus.MISSED)
                reasons.append(occurrence.reason)
                if occurrence.status is InvocationStatus.MISSED:
                    alert_events[row.id] = observe.Event(
                        tenant_id=row.tenant_id, project_id=row.project_id, trigger_id=row.id,
                        observation=Observation.MISSED, scheduled_for=occurrence.scheduled_for,
                        status=InvocationStatus.MISSED.value,
                        error=occurrence.reason or claims.MISSED_REASON)
            advanced.append(row)
            next_run_ats.append(plan.next_run_at)
            last_scheduled.append(
                plan.occurrences[-1].scheduled_for if plan.occurrences else None
            )
        # Runs share the tick's messages (fairness), held ones too (each is sent with its
        # instant as ETA); past them, runs wait parked, a held one until its instant.
        parked_at, sent = fairness.parked_ats([not missed for missed in misseds], sent, now)
        inserted = claims.insert_invocations(
            session,
            trigger_ids=trigger_ids,
            tenant_ids=tenant_ids,
            project_ids=project_ids,
            scheduled_fors=scheduled_fors,
            misseds=misseds,
            reasons=reasons,
            now=now,
            parked_ats=parked_at,
        )
        claims.advance_triggers(
            session,
            trigger_ids=[row.id for row in advanced],
            next_run_ats=next_run_ats,
            last_scheduled_fors=last_scheduled,
            enableds=[next_at is not None for next_at in next_run_ats],
        )
        if alert_events:
            advanced_ids = {row.id for row in advanced}
            observe.observe_watched(
                session, [event for trigger_id, event in alert_events.items()
                          if trigger_id in advanced_ids],
                now, public_url=options.public_url, with_ids=True)
    report.batches += 1
    report.claimed += len(advanced)
    new_ids = [key for key, status in inserted if status == InvocationStatus.PENDING]
    parked = sum(1 for _, status in inserted if status == claims.PARKED)
    report.created += len(new_ids) + parked
    report.parked += parked
    report.held += sum(1 for key in new_ids if key.scheduled_for > now)
    report.missed += len(inserted) - len(new_ids) - parked
    return new_ids, sent


def _unschedulable(
    session: Session, row: Row[Any], now: dt.datetime, exc: Exception
) -> TriggerPlan:
    reason = f"not run: the trigger's schedule cannot be computed ({exc}); trigger disabled"
    claims.record_unschedulable(
        session, trigger_id=row.id, tenant_id=row.tenant_id, project_id=row.project_id,
        scheduled_for=row.next_run_at, reason=reason, now=now,
    )
    log.error(
        "trigger disabled: its schedule cannot be computed",
        extra={"action": "dispatch.unschedulable", "tenant_id": row.tenant_id,
               "project_id": row.project_id, "trigger_id": str(row.id),
               "scheduled_for": row.next_run_at.isoformat(), "error": type(exc).__name__},
    )
    return TriggerPlan(occurrences=[], next_run_at=None)


def _publish(
    sessions: sessionmaker[Session],
    publish: Publish,
    invocation_ids: Sequence[InvocationKey],
    now: dt.datetime,
) -> int:
    """Publish a committed batch (recorded as published at ``now`` by its insert).

    Raises:
        Whatever ``publish`` raised, after recording the batch as unsent, so the next
        tick publishes it rather than the sweep CRONBEAT_REPUBLISH_AFTER_S later.
    """
    due = [key for key in invocation_ids if key.scheduled_for <= now]
    held: dict[dt.datetime, list[InvocationKey]] = {}
    for key in invocation_ids:
        if key.scheduled_for > now:
            held.setdefault(key.scheduled_for, []).append(key)
    try:
        count = publish(due) if due else 0
        for eta, keys in held.items():
            count += publish(keys, eta=eta)
        return count
    except Exception:
        try:
            with sessions.begin() as session:
                claims.unmark_published(session, [key.id for key in invocation_ids], now)
        except Exception:
            # The rows keep enqueued_at = now: the sweep publishes them once stale.
            log.warning("could not record a failed publish", exc_info=True,
                        extra={"action": "dispatch.unmark_failed"})
        raise


def _sweep(
    sessions: sessionmaker[Session], publish: Publish, now: dt.datetime,
    options: DispatchOptions, report: TickReport, oldest_waiting: OldestWaiting | None,
    broker_epoch: BrokerEpoch | None,
) -> None:
    counts = resend.sweep(
        sessions, publish, now, batch_size=options.batch_size,
        republish_after_s=options.republish_after_s, deployment_id=options.deployment_id,
        public_url=options.public_url, oldest_waiting=oldest_waiting,
        broker_epoch=broker_epoch)
    report.retries += counts.retries
    report.republished += counts.republished
    report.leases_expired += counts.leases_expired
