"""The run_trigger task: one invocation id in, one core call, a retry published after commit."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from app.delivery.send import TaskReport
from app.deploys.deploy import Superseded
from app.errors import TargetUnavailable
from app.firing.runner import RunOutcome, run_invocation
from app.limits import TIMEOUT_S
from app.queries.leases import LEASE_GRACE_S
from messaging.publisher import Run, publish_runs
from tasks import gate
from tasks.alerts import publish_alerts_quietly
from tasks.celery_app import RUN_TASK, celery_app
from tasks.reports import report_header, reports
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# The largest timeout_s a trigger may have (ck_triggers_timeout_range).
MAX_TRIGGER_TIMEOUT_S = TIMEOUT_S[1]
# A backstop for anything that holds a worker process past every check of its own (a C
# call no signal interrupts, a hung database statement): the prefork pool
# kills the process. It cannot cut short a delivery its lease still covers: the lease is
# at most MAX_TRIGGER_TIMEOUT_S + LEASE_GRACE_S from the claim, and this allows another
# LEASE_GRACE_S, by which the sweep takes such an attempt back as abandoned anyway.
RUN_TIME_LIMIT_S = MAX_TRIGGER_TIMEOUT_S + 2 * LEASE_GRACE_S


# Publishing a user's task message must end well inside the attempt's lease, even when
# the broker hangs (accepts connections, never answers): redis-py would wait on the
# socket forever, the lease would run out, and the sweep would run the attempt again,
# publishing a second message. Each connect and each socket read or write gives up
# after PUBLISH_TIMEOUT_S, and a publish is tried twice in all: about 2 * (5 + 5) s at
# worst, well inside LEASE_GRACE_S, which bounds a task target's attempt (its timeout_s
# is for webhook targets). Our own messages (retries) are published by publish_runs.
PUBLISH_TIMEOUT_S = 5.0
_PUBLISH_TRANSPORT_OPTIONS = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
    "socket_connect_timeout": PUBLISH_TIMEOUT_S, "socket_timeout": PUBLISH_TIMEOUT_S,
}
_PUBLISH_RETRY_POLICY = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
}


def publish_user_task(app: Celery, name: str, args: list[Any], kwargs: dict[str, Any],
                      queue: str, headers: dict[str, Any], *,
                      time_limit_s: float | None = None) -> None:
    """Publish a user task message on ``app``'s broker within a bounded time.

    A connection of its own (not the pool's) carries the timeouts above without
    changing how the worker's own connections behave.

    Raises:
        TargetUnavailable: the broker did not take the message. Only the exception's
            type is in the message: its text names the broker's host and port, and it
            becomes the tenant's last_error.
    """
    try:
        with app.connection_for_write(transport_options=_PUBLISH_TRANSPORT_OPTIONS) as conn:
            app.send_task(
                name, args=args, kwargs=kwargs, queue=queue, headers=headers,
                time_limit=time_limit_s, connection=conn, retry=True,
                retry_policy=_PUBLISH_RETRY_POLICY,
            )
    except (BrokerError, RedisError, OSError) as exc:
        log.warning("run_trigger: the broker did not take a user task message",
                    exc_info=True,
                    extra={"action": "run.task_publish_failed", "queue": queue})
        raise TargetUnavailable(f"broker unavailable: {type(exc).__name__}") from exc


def _send_task(name: str, args: list[Any], kwargs: dict[str, Any], queue: str,
               headers: dict[str, Any], wait_s: float | None) -> TaskReport | None:
    """Publish a user task message; a broker failure is transient (the attempt retries).
    With ``wait_s``, ask the task for its outcome (a report key and token in its header,
    tasks.reports; ``wait_s`` is also its time limit) and wait that long for it.

    Raises:
        TargetUnavailable: the broker did not take the message.
    """
    if wait_s is None:
        publish_user_task(celery_app, name, args, kwargs, queue, headers)
        return None
    facts = headers["cronbeat"]
    invocation_id, attempt = str(facts["invocation"]), int(facts["attempt"])
    outcome_reports = reports(get_runtime().settings.redis_url)
    outcome_reports.expect(invocation_id, attempt)
    asked = {**headers, "cronbeat": {
        **facts, **report_header(outcome_reports, invocation_id, attempt)}}
    try:
        publish_user_task(celery_app, name, args, kwargs, queue, asked, time_limit_s=wait_s)
    except BaseException:
        outcome_reports.forget(invocation_id, attempt)
        raise
    return outcome_reports.wait(invocation_id, attempt, wait_s)


def _scheduled_for(text: str | None) -> dt.datetime | None:
    """The message's scheduled_for, None if absent or not an instant with an offset."""
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


@celery_app.task(name=RUN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
                 time_limit=RUN_TIME_LIMIT_S)
def run_trigger(invocation_id: str, scheduled_for: str | None = None) -> RunOutcome | None:
    """Run one attempt of invocation ``invocation_id``; safe to receive any number of times.

    ``scheduled_for`` (ISO 8601, sent by this version's publishers) completes the key, so
    the attempt's statements read one day partition; without it, or with one that does
    not match, the run takes the path by id alone.

    Returns:
        What the call did (the engine reports it as the task's event; Celery keeps no
        result), None when the message named no run or was handed back.

    Raises:
        kombu / redis errors: publishing the retry failed. The invocation is already
        committed pending with its run_after, so the dispatcher's sweep publishes it.
    """
    try:
        parsed_id = uuid.UUID(invocation_id)
    except ValueError:
        # Nothing can ever run it; failing the task would only log the same thing louder.
        log.warning("run_trigger: not an invocation id",
                    extra={"action": "run.bad_id", "invocation_id": invocation_id})
        return None
    key = _scheduled_for(scheduled_for)
    run: Run = invocation_id if key is None else (invocation_id, key)
    runtime = get_runtime()
    try:
        outcome = run_invocation(
            runtime.sessions, runtime.settings, parsed_id, send_task=_send_task,
            scheduled_for=key, leased_by=gate.process_id(),
        )
    except Superseded as exc:
        # Nothing was written: hand the message back for the active deployment's
        # workers. This worker's gate (tasks/gate.py) stops consuming within a moment of
        # the activation; a message reaches a worker of another deployment only then.
        log.info("run_trigger: handed back (%s)", exc.message,
                 extra={"action": "run.handed_back", "invocation_id": invocation_id})
        publish_runs(celery_app, [run])
        return None
    if outcome.alert_ids:
        publish_alerts_quietly(outcome.alert_ids)
    if outcome.retry_in_s is not None:
        # After run_invocation's commit, never before: a worker that picked the retry up
        # at once must find the row pending.
        countdown_s = outcome.retry_in_s if outcome.retry_in_s > 0 else None
        publish_runs(celery_app, [run], countdown_s=countdown_s)
    return outcome
