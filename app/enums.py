"""The named states and policies of triggers and invocations (pure: no database here)."""

from __future__ import annotations

import enum


class TargetKind(enum.StrEnum):
    #: POST (or the configured method) a signed JSON body to a URL.
    WEBHOOK = "webhook"
    #: send_task a Celery task of the user's own code, on the same broker.
    TASK = "task"


class MisfirePolicy(enum.StrEnum):
    #: Run the latest missed occurrence once; record the others as missed.
    RUN_ONCE = "run_once"
    #: Run every missed occurrence (capped); record the rest as missed.
    RUN_ALL = "run_all"
    #: Record every missed occurrence as missed; wait for the next future one.
    SKIP = "skip"


class OverlapPolicy(enum.StrEnum):
    #: Occurrences run whether or not an earlier one is still running.
    ALLOW = "allow"
    #: An occurrence that finds an earlier one of its trigger running is recorded skipped.
    SKIP = "skip"
    #: An occurrence that finds another run of its trigger running waits, and starts as
    #: soon as that one ends; one more that comes meanwhile is recorded missed.
    BUFFER_ONE = "buffer_one"


class InvocationStatus(enum.StrEnum):
    #: Committed; its run_trigger message is published (or about to be) and not yet started,
    #: or a retry is waiting for its next attempt.
    PENDING = "pending"
    #: An attempt holds the lease and is delivering.
    RUNNING = "running"
    #: Delivered; the target accepted it.
    SUCCEEDED = "succeeded"
    #: Gave up: a permanent error, or max_attempts transient ones.
    FAILED = "failed"
    #: Not run: the trigger was deleted or disabled, or a user cancelled it.
    CANCELLED = "cancelled"
    #: Not run: the overlap policy found an earlier invocation still running.
    SKIPPED = "skipped"
    #: Not run: the occurrence was due while the scheduler was down or late, and the
    #: misfire policy chose not to run it.
    MISSED = "missed"

    @property
    def is_final(self) -> bool:
        return self not in (InvocationStatus.PENDING, InvocationStatus.RUNNING)


class InvocationOrigin(enum.StrEnum):
    """Why an invocation exists (:attr:`app.models.Invocation.origin`)."""

    #: An occurrence of the trigger's schedule, recorded by a tick.
    SCHEDULED = "scheduled"
    #: A run now (API, console or client).
    MANUAL = "manual"
    #: A past occurrence recorded by a backfill.
    BACKFILL = "backfill"
    #: A failed run run again (``replay_of`` names it).
    REPLAY = "replay"
    #: A scheduled occurrence that did not run: recorded missed, with its reason.
    MISSED = "missed"


class ProcessRole(enum.StrEnum):
    """What a worker, dispatcher or beat process does, given the active deployment."""

    #: Its deployment is the active one (or gating is off): it takes work.
    ACTIVE = "active"
    #: Its deployment was never activated and nothing else was activated since it
    #: started: it takes no work and begins the moment its deployment is activated.
    STANDBY = "standby"
    #: Another deployment was activated after its own, or after it started: it takes
    #: no work (unless its own deployment is activated again, as in a rollback).
    SUPERSEDED = "superseded"


class ProcessKind(enum.StrEnum):
    #: A Celery worker consuming cronbeat.runs (and maybe cronbeat.dispatch).
    WORKER = "worker"
    #: A Celery worker consuming only cronbeat.dispatch, or a `cronbeat dispatch` loop.
    DISPATCHER = "dispatcher"
    #: A Celery beat sending the dispatcher's ticks.
    BEAT = "beat"
